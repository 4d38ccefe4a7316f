"""Embeddings for whole images, object patches and masked instances.

-   :mod:`.models`: torchvision / offline / custom feature extractors
-   :mod:`.images`: decoding, colour conversion, crops and masks (numpy + PIL)
-   :mod:`.loader`: the torch ``Dataset`` that decodes in worker processes
-   :mod:`.compute`: :func:`compute_embeddings`, the FiftyOne-facing SDK call
-   :mod:`.reduce`: PCA fitted on a sample, applied in chunks
"""
