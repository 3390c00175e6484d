"""Evaluation: FID, KID, precision/recall and Inception Score on the FID Inception-v3 (Flax), plus the
weight-free sliced Wasserstein distance and the toy-data metrics.

Modules: ``inception`` (network, weights, features), ``fid``, ``kid``, ``precision_recall``,
``inception_score``, ``swd``, ``toy``, ``reference`` (cached real features), ``evaluation`` (all of
them on two image sets, and the cheap training-time metric), ``torch_pickle`` (safe .pt reader),
``spread`` (pixel spread, a collapse detector), ``memorisation``, ``slopes`` (a critic's input-gradient norms).
"""
