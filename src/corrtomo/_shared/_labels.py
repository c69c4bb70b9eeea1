"""Label conventions shared by every stage."""

from __future__ import annotations

#: Sparse label volumes (training labels for the phase classifier): 0 means "not labelled".
UNLABELLED: int = 0
#: Sparse label value for the embedding matrix (epoxy, pores): neither a mineral nor unlabelled.
#: Phase libraries used with sparse labels therefore hold ids 1..254.
MATRIX_LABEL: int = 255
