//! Hand-derived BPTT reference (being written).
