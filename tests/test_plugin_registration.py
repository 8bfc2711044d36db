"""Importing the plugin, or naming it in a config's custom_imports, registers everything."""
from conftest import run_python

NAMES = {
    "MODELS": ["SAMAdapterbimodalMixModNewInTwinConvNEW", "SAMAdapterbimodalMixModNewInTwinConvNEWwithcp",
               "MMSAMAdapter", "MultiModalEncoderDecoder", "MultiModalDataPreProcessor",
               "OhemCrossEntropy"],
    "DATASETS": ["DeliverDataset", "FMBDataset", "MUSESDataset"],
    "TRANSFORMS": ["LoadMultiModalImages", "LoadMultiModalAnnotations", "RandomGaussianBlurRGB",
                   "MultiModalResize", "MultiModalRandomCrop", "MultiModalRandomFlip",
                   "MultiModalPhotoMetricDistortion", "NormalizeMultiModal", "MultiModalPad",
                   "PackMultiModalInputs"],
    "METRICS": ["MultiModalIoUMetric", "PredictionWriter"],
    "OPTIM_WRAPPER_CONSTRUCTORS": ["LayerDecayOptimizerConstructor"],
}
CHECK = "".join(f"assert all(R.{reg}.get(n) is not None for n in {names!r}), {reg!r}\n"
                for reg, names in NAMES.items())


def test_import_registers_everything():
    result = run_python("import mmseg_custom\nimport mmseg.registry as R\n" + CHECK)
    assert result.returncode == 0, result.stderr[-3000:]


def test_custom_imports_in_config(repo_root):
    config = repo_root / "segmentation/configs/demo/segformer_mit-b0_early-fusion_synthetic-deliver_rgb_depth.py"
    code = ("import sys\nfrom mmengine.config import Config\n"
            f"Config.fromfile({str(config)!r})\n"
            "assert 'mmseg_custom' in sys.modules\nimport mmseg.registry as R\n" + CHECK)
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
