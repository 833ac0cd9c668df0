"""Offline speech data: eSpeak NG synthesis with word times, 25 Hz speech units, and corpora built from
them in SlamKit's formats (unit rows + word-alignment side-cars), with no download."""
