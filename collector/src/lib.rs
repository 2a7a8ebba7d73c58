//! wiretrail collector (see issue: collector).
