//! vc5-bird-bridge
