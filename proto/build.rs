//! Compiles every service's proto with protox, so no `protoc` has to be installed.

const PROTOS: &[&str] = &[
    "mall/auth/v1/auth.proto",
    "mall/user/v1/user.proto",
    "mall/product/v1/product.proto",
    "mall/cart/v1/cart.proto",
    "mall/order/v1/order.proto",
    "mall/payment/v1/payment.proto",
    "mall/checkout/v1/checkout.proto",
];

/// Messages whose derived `Debug` would print a secret; `src/lib.rs` gives each a redacting one.
const REDACTED_DEBUG: &[&str] = &[".mall.payment.v1.CreditCard"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = protox::compile(PROTOS, ["."])?;
    write_methods(&files)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(REDACTED_DEBUG)
        .compile_fds(files)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}

/// `methods.rs`: every `/package.Service/Method` the protos declare, for the checks that must cover
/// each one (retry safety, who may call it).
fn write_methods(files: &prost_types::FileDescriptorSet) -> std::io::Result<()> {
    let mut out = String::from(
        "/// Every gRPC method of Mall, as `/package.Service/Method`.\npub const METHODS: &[&str] = &[\n",
    );
    for file in &files.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                out.push_str(&format!("    \"/{package}.{}/{}\",\n", service.name(), method.name()));
            }
        }
    }
    out.push_str("];\n");
    let dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(std::path::Path::new(&dir).join("methods.rs"), out)
}
