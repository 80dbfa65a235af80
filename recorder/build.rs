// Rerun when a migration is added or changed: cargo does not track new files in
// `sqlx::migrate!`'s folder by itself.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
