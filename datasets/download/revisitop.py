"""ROxf, RPar and the R1M distractors into the layout ``datasets/revisitop.py`` reads.

- ROxf images: ``oxbuild_images-v1.tgz`` from the Oxford VGG site, the jpgs at the archive's top level;
- RPar images: ``paris_1-v1.tgz`` and ``paris_2-v1.tgz``, the jpgs in ``paris/<landmark>/`` sub-folders (a few
  of them corrupt: the revisited image lists leave those out). Both are flattened into ``jpg/``;
- the revisited ground truth ``<gnd-url>/<name>/gnd_<name>.pkl`` from the revisitop site;
- the distractors: ``<r1m-url>/revisitop1m.txt`` and the 100 parts ``<r1m-url>/jpg/revisitop1m.<i>.tar.gz``,
  extracted into ``jpg/`` keeping their sub-folders.

A rerun skips what is done: the ground truth once downloaded, ROxf/RPar archives once every listed image is
present (they are then deleted), and R1M parts whose ``.done`` marker exists (each part is deleted after its
extraction). Every image of every list is checked at the end.
"""

from datasets.download.archive import extract_archive
from datasets.download.fetch import MAX_ARCHIVE_BYTES, MAX_LIST_BYTES, DownloadError, fetch
from datasets.revisitop import R1M, dataset_dir, gnd_path, images_dir, load_revisitop
from utils.errors import InputError

OXFORD_URL = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings"
PARIS_URL = "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings"
GND_URL = "http://cmp.felk.cvut.cz/revisitop/data/datasets"
R1M_URL = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
ARCHIVES = {"roxford5k": ("oxbuild_images-v1.tgz",), "rparis6k": ("paris_1-v1.tgz", "paris_2-v1.tgz")}
R1M_PARTS = 100


def download_revisitop(data_root, name, images_url, gnd_url=GND_URL):
    """ROxf or RPar: ground truth, then (unless every listed image is there) the image archives."""
    root = dataset_dir(data_root, name)
    images_dir(data_root, name).mkdir(parents=True, exist_ok=True)
    gnd = gnd_path(data_root, name)
    fetch(f"{gnd_url}/{name}/gnd_{name}.pkl", gnd, MAX_LIST_BYTES)
    try:
        dataset = load_revisitop(data_root, name)
    except InputError as err:
        raise DownloadError(f"{err} (delete {gnd} to download it again)") from None
    archives = ARCHIVES[name]
    if dataset.missing_images():
        for archive in archives:
            fetch(f"{images_url}/{archive}", root / archive, MAX_ARCHIVE_BYTES)
        for archive in archives:
            extract_archive(root / archive, images_dir(data_root, name), flatten=True)
    dataset.check_images()
    for archive in archives:
        (root / archive).unlink(missing_ok=True)
    print(f">> {name}: {len(dataset.imlist)} database and {len(dataset.qimlist)} query images in {root}")


def download_r1m(data_root, url=R1M_URL):
    """The R1M distractors: the image list, then each part not yet marked done (downloaded, extracted, deleted)."""
    root = dataset_dir(data_root, R1M)
    images_dir(data_root, R1M).mkdir(parents=True, exist_ok=True)
    fetch(f"{url}/{R1M}.txt", root / f"{R1M}.txt", MAX_LIST_BYTES)
    parts = R1M_PARTS
    for i in range(1, parts + 1):
        archive = root / f"{R1M}.{i}.tar.gz"
        done = root / f"{archive.name}.done"
        if done.exists():
            continue
        fetch(f"{url}/jpg/{archive.name}", archive, MAX_ARCHIVE_BYTES, desc=f"[{i}/{parts}] {archive.name}")
        extract_archive(archive, images_dir(data_root, R1M), flatten=False)
        done.touch()
        archive.unlink()
    dataset = load_revisitop(data_root, R1M)
    dataset.check_images()
    print(f">> {R1M}: {len(dataset.imlist)} distractor images in {root}")
