"""Bibliographic facts about the training methods and architectures: link, title, authors, venue.

Model cards, ``config.json`` (timm's ``paper_ids`` / ``origin_url``) and the RobustBench
record (``link``, ``name``, ``authors``, ``venue``) need them in fields, not as the one-line
``paper`` string an objective carries. The built-in methods are listed here; a third-party
objective can give the same facts as class attributes ``paper_link``, ``paper_title``,
``paper_authors``, ``paper_venue`` and ``paper_ids`` (else only its ``paper`` string is used).
No torch, no network: plain data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Paper:
    """A paper as RobustBench's model_info and timm's pretrained_cfg name it.

    Attributes:
        link: URL of the paper (arXiv abstract page where there is one).
        title: full title (RobustBench's ``name``).
        authors: comma-separated author list.
        venue: e.g. 'ICML 2019'.
        ids: timm ``paper_ids`` ('arXiv:1901.08573'); empty when the paper has no arXiv id.
    """

    link: str = ""
    title: str = ""
    authors: str = ""
    venue: str = ""
    ids: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"link": self.link, "title": self.title, "authors": self.authors, "venue": self.venue,
                "ids": list(self.ids)}


def _arxiv(number: str, title: str, authors: str, venue: str) -> Paper:
    return Paper(f"https://arxiv.org/abs/{number}", title, authors, venue, (f"arXiv:{number}",))


#: Training methods (objective name -> paper).
METHODS: dict[str, Paper] = {
    "at": _arxiv("1706.06083", "Towards Deep Learning Models Resistant to Adversarial Attacks",
                 "Aleksander Madry, Aleksandar Makelov, Ludwig Schmidt, Dimitris Tsipras, Adrian Vladu",
                 "ICLR 2018"),
    "trades": _arxiv("1901.08573", "Theoretically Principled Trade-off between Robustness and Accuracy",
                     "Hongyang Zhang, Yaodong Yu, Jiantao Jiao, Eric P. Xing, Laurent El Ghaoui, "
                     "Michael I. Jordan", "ICML 2019"),
    # MART has no arXiv version; OpenReview is where RobustBench links it too.
    "mart": Paper("https://openreview.net/forum?id=rklOg6EFwS",
                  "Improving Adversarial Robustness Requires Revisiting Misclassified Examples",
                  "Yisen Wang, Difan Zou, Jinfeng Yi, James Bailey, Xingjun Ma, Quanquan Gu", "ICLR 2020"),
    "fat": _arxiv("2002.11242", "Attacks Which Do Not Kill Training Make Adversarial Learning Stronger",
                  "Jingfeng Zhang, Xilie Xu, Bo Han, Gang Niu, Lizhen Cui, Masashi Sugiyama, "
                  "Mohan Kankanhalli", "ICML 2020"),
    "calibrated": _arxiv("2110.00623", "Calibrated Adversarial Training",
                         "Tianjin Huang, Vlado Menkovski, Yulong Pei, Mykola Pechenizkiy", "ACML 2021"),
    "customized": _arxiv("2002.06789", "CAT: Customized Adversarial Training for Improved Robustness",
                         "Minhao Cheng, Qi Lei, Pin-Yu Chen, Inderjit Dhillon, Cho-Jui Hsieh", "arXiv 2020"),
}

#: Architectures (robustzoo architecture name -> the paper that introduced it).
ARCHITECTURES: dict[str, Paper] = {
    "preact_resnet18": _arxiv("1603.05027", "Identity Mappings in Deep Residual Networks",
                              "Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun", "ECCV 2016"),
    "wrn34_10": _arxiv("1605.07146", "Wide Residual Networks", "Sergey Zagoruyko, Nikos Komodakis",
                       "BMVC 2016"),
    "wrn28_10": _arxiv("1605.07146", "Wide Residual Networks", "Sergey Zagoruyko, Nikos Komodakis",
                       "BMVC 2016"),
    "cnn_mnist": METHODS["calibrated"],  # the MNIST net of Calibrated AT's experiments
    "smallcnn": METHODS["trades"],  # the MNIST net of the TRADES code
}

#: Robust accuracy in percent that a method's paper reported for one setting — what
#: RobustBench's ``reported`` field holds: (objective, dataset, architecture, norm, ε as
#: '8/255' or '0.031') -> (the number as RobustBench's record of the authors' model has it,
#: the objective settings the authors trained with).
REPORTED: dict[tuple[str, str, str, str, str], tuple[str, dict[str, Any]]] = {
    # RobustBench model_info/cifar10/Linf/Zhang2019Theoretically.json (no extra data)
    ("trades", "cifar10", "wrn34_10", "linf", "0.031"): ("56.43", {"beta": 6.0}),
}

_ARXIV_IN_TEXT = re.compile(r"arXiv[:\s]+(\d{4}\.\d{4,5})", re.IGNORECASE)


def method_paper(objective: str) -> Paper:
    """The paper of a training objective: the table above, else the objective's own attributes.

    Unknown objectives give an empty :class:`Paper` (every field '').
    """
    if objective in METHODS:
        return METHODS[objective]
    from .plugins import registry

    reg = registry("objectives")
    if objective not in reg:
        return Paper()
    cls = reg.get(objective)
    text = str(getattr(cls, "paper", "") or "")
    ids = tuple(getattr(cls, "paper_ids", ()) or ())
    if not ids and (m := _ARXIV_IN_TEXT.search(text)):
        ids = (f"arXiv:{m.group(1)}",)
    link = str(getattr(cls, "paper_link", "") or "")
    if not link and ids and ids[0].startswith("arXiv:"):
        link = f"https://arxiv.org/abs/{ids[0][len('arXiv:'):]}"
    return Paper(link=link, title=str(getattr(cls, "paper_title", "") or text),
                 authors=str(getattr(cls, "paper_authors", "") or ""),
                 venue=str(getattr(cls, "paper_venue", "") or ""), ids=ids)


def reported_accuracy(objective: str, *, dataset: str, architecture: str, norm: str, eps: str,
                      settings: dict[str, Any]) -> str | None:
    """The robust accuracy (percent, a string) the method's paper reported for this setting,
    or None when :data:`REPORTED` has no number for it or the run's objective ``settings``
    differ from the authors'."""
    number, theirs = REPORTED.get((objective, dataset, architecture, norm, eps), (None, {}))
    if number is None or any(settings.get(k) != v for k, v in theirs.items()):
        return None
    return number


def timm_paper_fields(paper: Paper) -> dict[str, Any]:
    """``paper_ids`` (when the paper has one) or else ``origin_url``, as timm's pretrained_cfg keeps them."""
    if paper.ids:
        return {"paper_ids": ", ".join(paper.ids)}
    return {"origin_url": paper.link} if paper.link else {}
