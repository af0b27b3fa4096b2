//! Prints the OpenAPI document a node at `http://127.0.0.1:7700` would serve.
fn main() {
    let doc = meshward_api::openapi::document("http://127.0.0.1:7700");
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("a JSON value prints")
    );
}
