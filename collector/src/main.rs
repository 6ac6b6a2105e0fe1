//! placeholder while the store lands
fn main() {}
