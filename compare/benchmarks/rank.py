"""One rank of a data-parallel measurement: what torchrun runs on each process of ``bench --distributed``.

Each rank builds the same engine from the same weights and wraps it for data parallelism exactly
as ``compare.train`` does (its rows of the batch, one all-reduce of the gradients per step), warms
up, then times whole training steps, all-reduce included; rank 0 writes the rates to a JSON file
for the launcher (compare.benchmarks.distributed, compare.benchmarks.hosts) to read.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from compare.benchmarks.timing import CONFIGS

LEARNING_RATE, CLIP, INIT_SEED = 0.1, 5.0, 0  # compare.train's defaults; the work per step does not depend on them


def rank_main(args: argparse.Namespace) -> None:
    """One rank of one measurement: time data-parallel training steps; rank 0 writes the rates to --as-rank."""
    import torch
    import torch.distributed as dist
    from threadpoolctl import threadpool_limits

    from compare.data.corpus import PYDOC_TOPICS, StreamBatches, Vocab, builtin_corpus
    from compare.model.engines import make_engine
    from compare.model.init import init_params
    from compare.training.parallel import DataParallel

    config, impl, threads = CONFIGS[args.configs], args.impls, int(os.environ["BENCH_THREADS"])
    torch.set_num_threads(threads)
    text = builtin_corpus(PYDOC_TOPICS)  # the text the documented speeds were measured on
    vocab = Vocab.from_text(text)
    batches = StreamBatches(vocab.encode(text), config.batch_size, config.seq_length)
    parallel = DataParallel.from_environment()
    dist.init_process_group("gloo")
    engine = parallel.wrap(
        make_engine(impl, init_params(len(vocab), config.hidden_size, INIT_SEED), LEARNING_RATE, CLIP, "float32")
    )
    engine.reset_hidden(config.batch_size)
    steps = iter(range(10**9))
    with threadpool_limits(limits=threads):
        for _ in range(args.warmup):
            engine.train_step(*batches.get_batch(next(steps) % len(batches)))
        rates = []
        for _ in range(args.repeats):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(args.steps):
                engine.train_step(*batches.get_batch(next(steps) % len(batches)))
            rates.append(args.steps * config.batch_size * config.seq_length / (time.perf_counter() - start))
    all_reduce_ms = time_all_reduce(sum(value.size for value in engine.numpy_params().values()) + 2)
    if parallel.is_main:
        Path(args.as_rank).write_text(json.dumps({"rates": rates, "all_reduce_ms": all_reduce_ms}))
    dist.barrier()  # no rank tears gloo down while another is still in a collective with it
    dist.destroy_process_group()


def time_all_reduce(size: int, times: int = 10) -> float:
    """Milliseconds of one float32 all-reduce of ``size`` numbers (the fastest of ``times``): the
    communication a training step adds, without the waiting for the slowest rank."""
    import torch
    import torch.distributed as dist

    flat = torch.zeros(size, dtype=torch.float32)
    fastest = float("inf")
    for _ in range(times):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest * 1e3
