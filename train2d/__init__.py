"""2D box-supervised instance segmenter (BoxInst/CondInst + IPG, MWSIS Sec. 3.2)."""
