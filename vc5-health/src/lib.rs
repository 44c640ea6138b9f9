//! vc5-health
