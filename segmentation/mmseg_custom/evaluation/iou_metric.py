"""IoU metric for multimodal segmentation with DeLiVER condition / case breakdowns."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Sequence

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
    """mIoU / mAcc / aAcc, per-class tables and per-(condition, case) / subset breakdowns.

    Every sample contributes its (intersection, union, prediction, label) areas; metrics are
    computed from areas summed over a group of samples (pooled, "micro"). All figures are
    percentages (unrounded; the tables print 2 decimals).

    Conventions (``nan_to_num``): None = standard mmseg mIoU (a class absent from prediction
    and ground truth of the evaluated set is left out of the mean); 0 = the original's
    convention (it counts as IoU 0, Q30).

    Returned keys:

    * ``aAcc``, ``mIoU`` (headline, for best-checkpoint selection), ``mAcc``: whole dataset.
    * with the condition/case breakdown (samples carry ``condition`` and ``case`` metainfo,
      DeLiVER): ``<condition>/<case>/mIoU`` per non-empty bucket, ``condition/<c>/mIoU``
      (areas pooled over the cases of condition c), ``case/<k>/mIoU`` (pooled over the
      conditions), ``mIoU_conditions_mean`` and ``mIoU_cases_mean`` (means of those pooled
      mIoUs; the original's ``mMicroIoU`` figures).
    * with ``by_subset``: ``subset/<name>/mIoU`` per ``subset`` metainfo value (easy/hard).

    Distributed evaluation is exact: mmengine collects per-rank results in sampler order and
    truncates the padding to the dataset size (Q8); duplicated ``img_path``s in the collected
    results (a sampler that shuffles or pads differently) raise an error.

    Args:
        ignore_index: ground-truth value excluded from all counts.
        nan_to_num: None (standard) or the value that replaces NaN IoU/Acc before averaging.
        condition_case: breakdown by (condition, case); None = when every sample has both.
        by_subset: breakdown by the ``subset`` metainfo (every sample must have it).
        num_classes: used when ``dataset_meta`` has no ``classes``.
        collect_device / prefix: see mmengine ``BaseMetric``.
    """

    default_prefix = None

    def __init__(self, ignore_index: int = 255, nan_to_num: float | None = None,
                 condition_case: bool | None = None, by_subset: bool = False,
                 num_classes: int | None = None, collect_device: str = "cpu",
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = int(ignore_index)
        self.nan_to_num = nan_to_num
        self.condition_case = condition_case
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
                areas=areas, img_path=sample.get("img_path"), condition=sample.get("condition"),
                case=sample.get("case"), subset=sample.get("subset")))

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
        breakdown = self.condition_case
        if breakdown is None:
            breakdown = all(r["condition"] is not None and r["case"] is not None for r in results)
        if breakdown:
            metrics.update(self._condition_case(results, classes, logger))
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

    def _grouped(self, results: list, key_fn) -> dict:
        groups: dict = defaultdict(list)
        for r in results:
            groups[key_fn(r)].append(r["areas"])
        return {k: self._summary(sum(v)) for k, v in sorted(groups.items())}

    def _condition_case(self, results: list, classes: list[str], logger: MMLogger) -> dict:
        for r in results:
            if r["condition"] is None or r["case"] is None:
                raise ValueError(f"sample {r['img_path']} has no condition/case metainfo")
        buckets = self._grouped(results, lambda r: (r["condition"], r["case"]))
        conditions = self._grouped(results, lambda r: r["condition"])
        cases = self._grouped(results, lambda r: r["case"])
        metrics: dict[str, float] = {}
        for (cond, case), s in buckets.items():
            metrics[f"{cond}/{case}/mIoU"] = s["mIoU"]
        for cond, s in conditions.items():
            metrics[f"condition/{cond}/mIoU"] = s["mIoU"]
        for case, s in cases.items():
            metrics[f"case/{case}/mIoU"] = s["mIoU"]
        metrics["mIoU_conditions_mean"] = float(np.mean([s["mIoU"] for s in conditions.values()]))
        metrics["mIoU_cases_mean"] = float(np.mean([s["mIoU"] for s in cases.values()]))
        rows = []
        for cond, pooled in conditions.items():
            row = [cond] + [buckets[(cond, case)]["mIoU"] if (cond, case) in buckets else "-"
                            for case in cases]
            rows.append(row + [pooled["mIoU"]])
        rows.append(["all"] + [cases[case]["mIoU"] for case in cases] +
                    [float(self._summary(sum(r["areas"] for r in results))["mIoU"])])
        print_log("mIoU per condition (rows) and case (columns); 'all' = pooled areas:\n" +
                  format_table(["condition"] + list(cases) + ["all"], rows), logger=logger)
        header = ["Class"] + [f"IoU {c}" for c in conditions] + [f"IoU {k}" for k in cases]
        rows = [[name] + [float(s["IoU"][i]) for s in conditions.values()] +
                [float(s["IoU"][i]) for s in cases.values()] for i, name in enumerate(classes)]
        print_log("per-class IoU pooled per condition and per case:\n" +
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
