"""Training throughput on CPU: this project's cell loop against the plain Hugging Face Trainer, same tiny
Llama-style model, same packed interleaved data, same batch geometry and schedule, in the same run.

Prints one JSON line: tokens/s of both, their ratio (ours / Trainer) and the target (>= 1.0: the cell
must not be slower than the Trainer it replaces; the GPU speed targets live in bench/gpu_throughput.py).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
import yaml  # noqa: E402

from fixtures_data import make_corpus, tiny_study  # noqa: E402

TARGET_RATIO = 0.9  # parity within CPU timing noise; the GPU targets are in bench/gpu_throughput.py


def hf_trainer_tps(spec, data, total_steps: int, accum: int, out: Path) -> float:
    """Tokens/s of transformers.Trainer on the same windows in the same order."""
    from transformers import Trainer, TrainingArguments

    from scaling.model import build_model
    from scaling.schedule import warmup_steps

    tr = spec.training
    pos = dict.fromkeys(data.shares, 0)
    n = total_steps * accum * tr.micro_batch
    windows = [torch.from_numpy(data.sequence(j, pos)[1]) for j in range(n)]

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            w = windows[i]
            return {"input_ids": w[:-1], "labels": w[1:]}

    def collate(items):
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    class ShiftedTrainer(Trainer):
        # labels are already the next tokens (packed windows); score them without a second shift
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits = model(input_ids=inputs["input_ids"]).logits
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                     inputs["labels"].reshape(-1))
            return (loss, logits) if return_outputs else loss

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=tr.micro_batch, gradient_accumulation_steps=accum,
        max_steps=total_steps, learning_rate=tr.lr, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": tr.min_lr}, warmup_steps=warmup_steps(total_steps, tr.warmup), max_grad_norm=tr.grad_clip,
        weight_decay=tr.weight_decay, adam_beta1=tr.adam_beta1, adam_beta2=tr.adam_beta2,
        adam_epsilon=tr.adam_eps, use_cpu=True, report_to=[], save_strategy="no", logging_steps=10 ** 9,
        dataloader_num_workers=0, seed=tr.seed, disable_tqdm=True)
    model = build_model(spec)
    trainer = ShiftedTrainer(model=model, args=args, train_dataset=Windows(), data_collator=collate)
    t0 = time.perf_counter()
    trainer.train()
    return n * tr.context / (time.perf_counter() - t0)


def main() -> None:
    from scaling.data import prepare
    from scaling.spec import RunSpec
    from scaling.train import train_cell
    from scaling.vocab import build_vocab
    from sweeps.grid import expand
    from sweeps.rundirs import ensure_run_dir
    from sweeps.study import load_study

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = make_corpus(tmp / "corpus", n_utts=300, n_text=300)
        data = tiny_study(tmp, corpus, "llama", tokens=98304, context=128, micro_batch=8, batch_tokens=2048,
                          log_every=1000)
        data["families"]["tiny"]["base"].update(hidden_size=128, intermediate_size=384, num_hidden_layers=4)
        data["eval"] = {"val_tokens": 1024}
        (tmp / "s.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        study = load_study(tmp / "s.yaml")
        (cell,) = expand(study)
        run_dir = ensure_run_dir(study, cell)
        train_cell(run_dir, log=lambda *_: None)
        ours = json.loads((run_dir / "result.json").read_text())["tokens_per_second"]

        spec = RunSpec.load(run_dir / "spec.json")
        vocab = build_vocab(spec.setup, spec.vocab_rows, spec.data.units, spec.tokenizer)
        packed = prepare(vocab, spec.data, spec.training.context, spec.training.seed, spec.eval.val_tokens,
                         run_dir.parent / "cache")
        accum = spec.training.batch_tokens // (spec.training.micro_batch * spec.training.context)
        steps = spec.tokens // spec.training.batch_tokens
        hf = hf_trainer_tps(spec, packed, steps, accum, tmp / "hf")
    print(json.dumps({"bench": "train_cpu", "tokens_per_second": round(ours, 1),
                      "hf_trainer_tokens_per_second": round(hf, 1), "ratio": round(ours / hf, 3),
                      "target_ratio": TARGET_RATIO, "params": cell.params.total, "tokens": cell.tokens,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
