//! HPKE envelopes (being written).
