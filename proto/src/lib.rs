//! wiretrail protocol definitions.
