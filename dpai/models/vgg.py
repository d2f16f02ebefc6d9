"""VGG-19 with BatchNorm, CIFAR plan: convs with biases, a 2x2 average pool, one linear layer."""
from torch import nn

PLAN_19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
           512, 512, 512, 512, "M", 512, 512, 512, 512]


class VGG(nn.Module):
    def __init__(self, plan, num_classes, in_channels, image_size):
        super().__init__()
        layers, size = [], image_size
        for v in plan:
            if v == "M":
                # on inputs smaller than 32x32 (e.g. 8x8 digits) a pool that would reach 0x0 is dropped
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_channels = v
        self.features = nn.Sequential(*layers)
        # the reference's AvgPool2d(2) on the 2x2 CIFAR map; adaptive so other sizes work too
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x))))


def vgg19_bn(num_classes: int, in_channels: int, image_size: int) -> VGG:
    return VGG(PLAN_19, num_classes, in_channels, image_size)
