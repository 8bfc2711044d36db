"""Contract between the datasets and the multimodal loaders: every dataset's data_info feeds
LoadMultiModalImages + LoadMultiModalAnnotations (label range checked with num_classes)."""
import numpy as np
import pytest

import mmseg_custom  # noqa: F401
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from mmseg_custom.datasets.synthetic import make_synthetic

CASES = [
    ('deliver', 'DeliverDataset', ['rgb', 'lidar', 'event'], 25),
    ('fmb', 'FMBDataset', ['rgb', 'infrared'], 14),
    ('muses', 'MUSESDataset', ['rgb', 'lidar', 'event'], 19),
]


@pytest.mark.parametrize('fmt,dataset,mods,num_classes', CASES)
def test_dataset_through_loaders(tmp_path, fmt, dataset, mods, num_classes):
    init_default_scope('mmseg')  # as set by the configs (default_scope='mmseg')
    make_synthetic(fmt, str(tmp_path), (2, 1, 1), seed=0, size=(24, 32))
    channels = [3] * len(mods)
    ds = DATASETS.build(dict(
        type=dataset, data_root=str(tmp_path), split='train', modalities=mods,
        pipeline=[dict(type='LoadMultiModalImages', modalities=mods, channels=channels),
                  dict(type='LoadMultiModalAnnotations')]))
    out = ds[0]
    assert out['img'].shape == (24, 32, 3 * len(mods)) and out['img'].dtype == np.float32
    seg = out['gt_seg_map']
    assert seg.shape == (24, 32)
    assert set(np.unique(seg).tolist()) - {255} <= set(range(num_classes))
    assert 255 in seg  # every synthetic scene has an ignore / unlabeled patch
