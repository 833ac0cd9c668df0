"""How the fused head + loss cuts its work: the kernel (scaling.linear_ce) runs it and the memory planner
(scaling.memory, torch-free) counts it, so both read these from here and cannot drift apart."""

ROW_ALIGN = 128        # head rows are padded to this in the fused head's matmul copy


def chunk_tokens(vocab: int, budget_bytes: int = 4 << 30) -> int:
    """Tokens per chunk of the fused head + loss: a power of two in [1024, 16384] with chunk x vocab x 4
    bytes (logits and their gradient in bf16) within `budget_bytes`. Big chunks keep the head matmuls
    efficient."""
    fit = 1 << max(0, (budget_bytes // (4 * vocab)).bit_length() - 1)
    return min(16384, max(1024, fit))
