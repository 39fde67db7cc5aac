"""bptt-compare: the commands a user runs, and the machinery behind them.

Commands (``python -m compare.<name> --help`` lists each one's flags):
    train              train with --impl manual, torch or both; TensorBoard under runs/   docs/training.md
    sample             generate text from a checkpoint                                   docs/sampling.md
    gradcheck          the original write-up's Table 1: BPTT against every oracle         docs/gradcheck.md
    gradflow           how far back a loss reaches: ||dL_T/dh_{T-k}|| per cell; --truncation  docs/gradflow.md
    bench              speed, memory; --cells, --peers, --calls, --distributed, --demo, --rtrl  docs/speed.md
                       --optimizers: every optimizer trained side by side             docs/training.md
    bench_cells        the same as bench --cells: rnn, lstm, gru at equal size            docs/cells.md
    bench_distributed  the same as bench --distributed: 1 and 2 processes                 docs/distributed.md
    demo               a web page that generates text from a checkpoint                   docs/demo.md
    plot               a run's loss curves (and drift) as a PNG                           docs/demo.md
    cuda_check         on a GPU machine: --device cuda trains like the CPU                docs/distributed.md
    report             every figure the docs quote, rerun; rewrites the generated blocks  README.md, docs/*.md

Subpackages (each imports only downward: never a command module):
    cli         parser.py: the one argument parser (one-line errors, --debug); errors.py: run_cli, exit codes
    data        corpus.py: --data (or a built-in corpus) read and checked, its vocabulary, the held-out split,
                the batches; prose.py: the built-in prose corpus
    model       init.py: the shared initializer, the sizes' bounds, the memory a model needs (and forward mode's
                cost: docs/forward.md); state.py: what
                an engine exports; engines.py: both implementations behind one step; sampling.py: text from
                an engine, and from a checkpoint (compare.sample, the demo);
                checkpoint.py: the .npz format, saved, loaded and found (a file, a run directory, the newest
                run under --logdir); checkpoint_reading.py: an untrusted .npz read, the header's fields
                checked first, then each array;
                cells.py: --cell, a built-in cell or your own by import path; a checkpoint's cell, never imported
                unless --cell names it
    training    config.py: the train command's flags and TrainConfig: presets, the checks on the settings, how a
                resume merges them, torch's thread count without --threads, and RunSpec, what they resolve
                to once (the cell pair, the corpus, the dtype); loop.py: set-up and the one flat training
                loop, with validation and the divergence check; run.py: a run directory and what is in it
                (the Run, save and restore, its lock, leftovers of a killed save, no new training over a
                run's checkpoints without --overwrite, a run restarted by torchrun --max-restarts);
                logger.py: what a run reports (TensorBoard, the progress bar, the finished run's summary);
                agreement.py: --impl both's implementation error on identical inputs, and the verdict (the bound
                per dtype) that gradcheck, gradflow and train --impl both exit with; parallel.py: data
                parallelism on torch.distributed, and stopping on Ctrl-C or SIGTERM
    gradients   oracles.py: every way to get a gradient (manual, autograd, centred differences, complex step), at
                chosen entries or whole, and the errors between them; check.py: gradcheck's table, its settings,
                its verdict, as Markdown; localize.py: per-step dL/dx_proj_t, dL/dh_t and the carry, manual beside
                autograd; diagnose.py: gradcheck --diagnose, the verdict in words, where a backward first goes
                wrong (layer, step, gate, path), the heat map;
                routes.py: gradcheck --routes, one gradient four ways (BPTT and RTRL by hand, reverse and
                forward autograd), each pair's difference, the verdict;
                second_order.py: gradcheck --second-order, H v three ways (R-operator, double backward, complex
                step) and G v two ways, per parameter (docs/second-order.md);
                flow.py: gradient flow through time, by hand (and its TensorBoard scalars) and by autograd;
                truncation.py: gradflow --truncation, truncated BPTT's gradient against the exact one (RTRL) per K;
                flow_run.py: what compare.gradflow measures, init and trained
    examples    mgu.py: the minimal gated unit, a cell plugged in with --cell compare.examples.mgu (docs/cells.md)
    benchmarks  suite.py: what bench runs; timing.py; report.py; flops.py: FLOP formulas, matmul peak;
                naive.py: the min-char-rnn baseline; cells.py; distributed.py: bench --distributed, its launcher
                and what each rank runs; memory.py;
                saved.py: bench --saved, the hand cache against autograd's saved tensors, and bench --memory-curve;
                fused.py: nn.RNN/LSTM/GRU as a peer; peers.py: every cell against it, 1 and 2 threads, and its
                tables; baseline.py: the vanilla step frozen at f287690, the "before";
                products.py: that step's matrix products alone, the ceiling of its FLOP rate;
                calls.py: bench --calls, what one step executes, and its counter; hosts.py:
                between network hosts; netns.py: hosts as network namespaces of this machine;
                denormals.py: flush denormals, NumPy's BLAS worker threads included;
                second_order.py: bench --second-order, H v by hand and by autograd beside each one's gradient;
                demo_load.py: bench --demo, the demo server's short requests under clients that hammer it;
                forward_cost.py: bench --rtrl, BPTT, RTRL, reverse and forward autograd per step as H grows
                optimizers.py: bench --optimizers, every optimizer trained by compare.train side by side, loss
                against steps and wall time
    serving     server.py + page.html: the demo's HTTP server (Starlette on uvicorn): what POST /api/generate
                takes, checked against the model; how many generations run at once, and how long a request
                waits for one; the app; connections.py: its listening socket and connection timeouts
    plotting    events.py: TensorBoard events read back; figure.py: the matplotlib figure; flow_figure.py: gradflow's;
                forward_figure.py: bench --rtrl's cost against H and gradflow --truncation's error against K
    reporting   markers.py: the generated blocks; provenance.py: commit, CPU, threads, load; runner.py;
                text.py; quickstart.py, training.py, agreement.py, original.py, cells.py, benches.py, flow.py,
                peers.py, diagnosis.py, derivatives.py (routes, rtrl, truncation, second_order): the sections;
                sections.py: their list; generate.py; browser.py: the demo page in headless Chromium
                (docs/demo.png); screenshots.py: TensorBoard in headless Chromium
"""
