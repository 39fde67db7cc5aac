"""The machinery behind ``python -m compare.report``: every figure the docs quote, regenerated.

markers.py     find the ``<!-- report:NAME -->`` ... ``<!-- /report:NAME -->`` blocks and rewrite them
provenance.py  the commit, the CPU, the threads and the machine's load during a section
runner.py      run one documented command in a scratch directory, and the Block a section returns
text.py        the small formatting helpers the sections share (durations, numbers, code fences)
training.py    the sections that train: quickstart, samples, drift, lossplot, cells
benches.py     the sections that time: bench, memory, the cells' speed, distributed, hosts
flow.py        the gradflow section: compare.gradflow's lag table and docs/gradflow.png
sections.py    the list of sections, what each one needs, the gradcheck section
generate.py    the whole run: read the docs, run the sections, write (or diff, or check) the blocks
"""
