// The `swarm-node` program as an example, so that `cargo run --release --example
// swarm-node -- demo` (the README's first command) keeps working beside the installable
// binary (`cargo install swarm-mesh`, `cargo run --release --bin swarm-node`). One
// source: the binary's.

include!("../src/bin/swarm-node/main.rs");
