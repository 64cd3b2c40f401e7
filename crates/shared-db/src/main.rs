//! `shared-db`: the operator binary (placeholder until the single-node operator lands).

fn main() {
    eprintln!("shared-db: the operator is not implemented yet");
    std::process::exit(2);
}
