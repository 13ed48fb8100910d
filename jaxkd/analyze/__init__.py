"""`python -m jaxkd.analyze`: what trained models do inside (../shared/spec/LATER.md §4, written as §7 says it should
have been), on a seeded sample of the validation split (the test split only with --split test, §7.2).

* ``attention`` / ``heads`` (ViTs): mean attention distance per layer and head, and per-head entropy, CLS
  dispersion, CLS self-attention and collapsed heads (:mod:`jaxkd.analyze.attention`; grid and special tokens from
  the model, patch-patch attention renormalised, distances in patches);
* ``cka``: linear and RBF CKA with the biased and the unbiased (Song et al. 2012) HSIC, across the model's own layers
  and against its teacher's (CNN stages included) (:mod:`jaxkd.analyze.cka`);
* ``hessian``: the trace (Hutchinson, Rademacher probes, with its standard error) and the top eigenvalues (Lanczos)
  of the Hessian of the mean cross-entropy at the trained parameters, through jitted forward-over-reverse
  Hessian-vector products (:mod:`jaxkd.analyze.hessian`).

:mod:`jaxkd.analyze.features` reads the models, :mod:`jaxkd.analyze.run` runs the analysis and writes
``OUT/analysis.json``, :mod:`jaxkd.analyze.plots` the figures. ``torch_ref.analyze`` is the independent PyTorch twin
of the attention and CKA formulas (``parity_tests/test_analyze_parity.py``).
"""
