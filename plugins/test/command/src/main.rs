//! `command`: a wasi:cli command (it exports `wasi:cli/run`), the component a newcomer gets
//! from `cargo new` instead of a plugin; plughost's tests check it is refused by name.
fn main() {
    println!("a command, not a plugin");
}
