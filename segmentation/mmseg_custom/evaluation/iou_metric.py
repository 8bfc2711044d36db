"""IoU metric for multimodal segmentation with condition / case (or weather / time) breakdowns."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Callable, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmseg.registry import METRICS

from .areas import confusion_areas, summarize
from .tables import format_table


def _as_map(data: torch.Tensor) -> torch.Tensor:
    """(1, H, W) or (H, W) label tensor -> (H, W)."""
    return data[0] if data.ndim == 3 and data.shape[0] == 1 else data


@METRICS.register_module()
class MultiModalIoUMetric(BaseMetric):
    """mIoU / mAcc / aAcc, per-class tables and two-level / subset breakdowns.

    Every sample contributes its (intersection, union, prediction, label) areas; metrics are
    computed from areas summed over a group of samples (pooled, "micro"). All figures are
    percentages (unrounded; the tables print 2 decimals).

    Conventions (``nan_to_num``): None = standard mmseg mIoU (a class absent from prediction
    and ground truth of the evaluated set is left out of the mean); 0 = the original's
    convention (it counts as IoU 0, Q30).

    Returned keys (``group_by = (A, B)``, default ``('condition', 'case')``, DeLiVER):

    * ``aAcc``, ``mIoU`` (headline, for best-checkpoint selection), ``mAcc``: whole dataset.
    * with the breakdown: ``<a>/<b>/mIoU`` per non-empty (a, b) bucket, ``A/<a>/mIoU``
      (areas pooled over every b of a, e.g. ``condition/fog/mIoU``), ``B/<b>/mIoU`` (pooled
      over every a, e.g. ``case/motionblur/mIoU``), ``mIoU_As_mean`` and ``mIoU_Bs_mean``
      (means of those pooled mIoUs, e.g. ``mIoU_conditions_mean``: the original's
      ``mMicroIoU`` figures).
    * with ``by_subset``: ``subset/<name>/mIoU`` per ``subset`` metainfo value (easy/hard).

    Distributed evaluation is exact: mmengine collects per-rank results in sampler order and
    truncates the padding to the dataset size (Q8); duplicated ``img_path``s in the collected
    results (a sampler that shuffles or pads differently) raise an error.

    Args:
        ignore_index: ground-truth value excluded from all counts.
        nan_to_num: None (standard) or the value that replaces NaN IoU/Acc before averaging.
        breakdown: report the two-level breakdown; None = when every sample has both keys.
        group_by: the two metainfo keys of the breakdown (MUSES: ``('weather', 'time')``).
        by_subset: breakdown by the ``subset`` metainfo (every sample must have it).
        num_classes: used when ``dataset_meta`` has no ``classes``.
        collect_device / prefix: see mmengine ``BaseMetric``.
    """

    default_prefix = None

    def __init__(self, ignore_index: int = 255, nan_to_num: float | None = None,
                 breakdown: bool | None = None,
                 group_by: Sequence[str] = ("condition", "case"), by_subset: bool = False,
                 num_classes: int | None = None, collect_device: str = "cpu",
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if len(group_by) != 2:
            raise ValueError(f"group_by needs two metainfo keys, got {list(group_by)}")
        self.ignore_index = int(ignore_index)
        self.nan_to_num = nan_to_num
        self.breakdown = breakdown
        self.group_by = tuple(group_by)
        self.by_subset = by_subset
        self.num_classes = num_classes

    @property
    def class_names(self) -> list[str]:
        classes = (self.dataset_meta or {}).get("classes")
        if classes:
            return list(classes)
        if self.num_classes is None:
            raise ValueError("MultiModalIoUMetric needs dataset_meta['classes'] or num_classes")
        return [str(i) for i in range(self.num_classes)]

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Store the areas and grouping metainfo of every sample of a batch."""
        num_classes = len(self.class_names)
        for sample in data_samples:
            if hasattr(sample, "to_dict"):
                sample = sample.to_dict()
            name = str(sample.get("img_path", "sample"))
            pred = _as_map(sample["pred_sem_seg"]["data"])
            label = _as_map(sample["gt_sem_seg"]["data"]).to(pred.device)
            areas = confusion_areas(pred, label, num_classes, self.ignore_index, name)
            self.results.append(dict(
                areas=areas, img_path=sample.get("img_path"), subset=sample.get("subset"),
                groups=tuple(sample.get(key) for key in self.group_by)))

    def _summary(self, areas: np.ndarray) -> dict[str, Any]:
        out = summarize(areas, self.nan_to_num)
        for key in ("aAcc", "mIoU", "mAcc"):
            out[key] *= 100.0
        out["IoU"] = out["IoU"] * 100.0
        out["Acc"] = out["Acc"] * 100.0
        return out

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Metrics from all collected per-sample results (rank 0 after collection)."""
        if not results:
            raise ValueError("MultiModalIoUMetric: no results to evaluate")
        self._check_duplicates(results)
        logger = MMLogger.get_current_instance()
        classes = self.class_names
        total = self._summary(sum(r["areas"] for r in results))
        metrics = {k: total[k] for k in ("aAcc", "mIoU", "mAcc")}
        rows = [[c, float(i), float(a)] for c, i, a in zip(classes, total["IoU"], total["Acc"])]
        print_log("per-class results:\n" + format_table(["Class", "IoU", "Acc"], rows),
                  logger=logger)
        print_log("\n" + format_table(["aAcc", "mIoU", "mAcc"], [[metrics["aAcc"],
                  metrics["mIoU"], metrics["mAcc"]]]), logger=logger)
        breakdown = self.breakdown
        if breakdown is None:
            breakdown = all(None not in r["groups"] for r in results)
        if breakdown:
            metrics.update(self._two_level(results, classes, total, logger))
        if self.by_subset:
            metrics.update(self._subsets(results, logger))
        return metrics

    @staticmethod
    def _check_duplicates(results: list) -> None:
        paths = Counter(r["img_path"] for r in results if r["img_path"] is not None)
        repeated = [p for p, n in paths.items() if n > 1]
        if repeated:
            raise ValueError(f"{len(repeated)} sample(s) were evaluated more than once (e.g. "
                             f"{repeated[:3]}): the evaluation sampler must visit every sample "
                             "exactly once in dataset order (mmengine DefaultSampler, shuffle=False)")

    def _grouped(self, results: list, key_fn: Callable[[dict], Any]) -> dict:
        groups: dict = defaultdict(list)
        for r in results:
            groups[key_fn(r)].append(r["areas"])
        return {k: self._summary(sum(v)) for k, v in sorted(groups.items())}

    def _two_level(self, results: list, classes: list[str], total: dict,
                   logger: MMLogger) -> dict:
        first, second = self.group_by
        for r in results:
            if None in r["groups"]:
                raise ValueError(f"sample {r['img_path']} has no '{first}'/'{second}' metainfo")
        buckets = self._grouped(results, lambda r: r["groups"])
        outer = self._grouped(results, lambda r: r["groups"][0])
        inner = self._grouped(results, lambda r: r["groups"][1])
        metrics: dict[str, float] = {}
        for (a, b), s in buckets.items():
            metrics[f"{a}/{b}/mIoU"] = s["mIoU"]
        for a, s in outer.items():
            metrics[f"{first}/{a}/mIoU"] = s["mIoU"]
        for b, s in inner.items():
            metrics[f"{second}/{b}/mIoU"] = s["mIoU"]
        metrics[f"mIoU_{first}s_mean"] = float(np.mean([s["mIoU"] for s in outer.values()]))
        metrics[f"mIoU_{second}s_mean"] = float(np.mean([s["mIoU"] for s in inner.values()]))
        rows = [[a] + [buckets[(a, b)]["mIoU"] if (a, b) in buckets else "-" for b in inner] +
                [pooled["mIoU"]] for a, pooled in outer.items()]
        rows.append(["all"] + [s["mIoU"] for s in inner.values()] + [total["mIoU"]])
        print_log(f"mIoU per {first} (rows) and {second} (columns); 'all' = pooled areas:\n" +
                  format_table([first] + list(inner) + ["all"], rows), logger=logger)
        header = ["Class"] + [f"IoU {a}" for a in outer] + [f"IoU {b}" for b in inner]
        rows = [[name] + [float(s["IoU"][i]) for s in outer.values()] +
                [float(s["IoU"][i]) for s in inner.values()] for i, name in enumerate(classes)]
        print_log(f"per-class IoU pooled per {first} and per {second}:\n" +
                  format_table(header, rows), logger=logger)
        return metrics

    def _subsets(self, results: list, logger: MMLogger) -> dict:
        for r in results:
            if r["subset"] is None:
                raise ValueError(f"by_subset: sample {r['img_path']} has no 'subset' metainfo")
        subsets = self._grouped(results, lambda r: r["subset"])
        rows = [[name, s["aAcc"], s["mIoU"], s["mAcc"]] for name, s in subsets.items()]
        print_log("results per subset:\n" + format_table(["subset", "aAcc", "mIoU", "mAcc"], rows),
                  logger=logger)
        return {f"subset/{name}/mIoU": s["mIoU"] for name, s in subsets.items()}
