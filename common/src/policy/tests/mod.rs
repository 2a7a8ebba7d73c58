//! Policy tests: parsing and validation (with positions), membership and
//! decisions, and a property test of compile() against decide().
mod decide;
mod limits;
mod parse;
mod prop;
