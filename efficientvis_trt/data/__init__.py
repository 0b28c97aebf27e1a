"""Training data: the synthetic VIS benchmark generator and the YouTube-VIS reader.

Submodules are imported explicitly (`efficientvis_trt.data.synthetic`,
`efficientvis_trt.data.ytvis`) so that importing this package costs nothing.
"""
