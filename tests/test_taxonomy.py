"""Labels and their supercategories: every label a detector may predict has one."""

from __future__ import annotations

from trashmap.taxonomy import (
    OTHER_LITTER,
    category_to_supercategory,
    labels_in,
    supercategories,
    supercategory_of,
)


def test_every_taco_category_and_supercategory_resolves() -> None:
    mapping = category_to_supercategory()
    assert len(mapping) == 60 and len(supercategories()) == 28
    for name, sup in mapping.items():
        assert supercategory_of(name) == sup
        assert name in labels_in(sup)
    for sup in supercategories():
        assert supercategory_of(sup) == sup  # a supercategory model predicts them as is


def test_other_litter_counts_as_unlabeled_litter() -> None:
    # A model trained with --other-litter predicts this class; map filters and stats must
    # find it under a supercategory rather than drop it as unknown.
    assert supercategory_of(OTHER_LITTER) == "Unlabeled litter"
    assert OTHER_LITTER in labels_in("Unlabeled litter")
    assert supercategory_of("not a label") is None
