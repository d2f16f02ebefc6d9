"""What each dataset is: shape, classes, default source and checksum, augmentation."""
from dataclasses import dataclass



@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    crop_padding: int    # random crop of image_size after zero padding this many pixels per side
    flip: bool           # random horizontal flip during training
    url: str | None      # default source; None: sklearn (digits) or user-supplied (imagenet)
    md5: str | None      # md5 of the default source archive
    n_train: int         # training images (what a batch size and a scoring sample must fit)
    min_class_train: int  # training images of the smallest class
    in_memory: bool = True


DATASETS: dict[str, DatasetSpec] = {
    # Flipping a handwritten digit changes what it looks like (2, 3, 7...): no flip; 8x8 images
    # take a 1-pixel shift, the 4-pixel CIFAR shift would move half the digit out of view.
    "digits": DatasetSpec("digits", 10, 1, 8, crop_padding=1, flip=False, url=None, md5=None,
                          n_train=1437, min_class_train=139),
    # Reference loader: RandomCrop(32, padding=4) + RandomHorizontalFlip.
    # URLs and md5s as torchvision's CIFAR10/CIFAR100 classes give them (tests/test_data.py
    # checks they still agree); written out so that reading a spec never imports torchvision,
    # which costs every stage seconds.
    "cifar10": DatasetSpec("cifar10", 10, 3, 32, 4, True,
                           "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "c58f30108f718f92721af3b95e74349a",
                           50000, 5000),
    "cifar100": DatasetSpec("cifar100", 100, 3, 32, 4, True,
                            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                            "eb9058c3a382ffc7106e4002c42a8d85",
                            50000, 500),
    # Same recipe at 64x64 (RandomCrop(64, padding=4) + flip).
    "tiny-imagenet": DatasetSpec("tiny-imagenet", 200, 3, 64, 4, True,
                                 "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                 "90528d7ca1a48142e341f4ef8d21d0de", 100000, 500),
    # Streamed from disk; RandomResizedCrop(224) + flip (train), Resize(256) + CenterCrop(224).
    "imagenet": DatasetSpec("imagenet", 1000, 3, 224, 0, True, None, None, 1281167, 732,
                            in_memory=False),
}


def get_spec(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not one of {list(DATASETS)}")
    return DATASETS[dataset]
