//! Prints the MallStack CRD: `cargo run -p mall-operator --bin crdgen > crds/mallstack.yaml`.

fn main() {
    print!("{}", mall_operator::crd_yaml());
}
