//! `sqlx::migrate!` embeds ../migrations at compile time, but cargo does not notice a new `.sql`
//! file there on its own: tell it to rebuild this crate whenever that folder changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
