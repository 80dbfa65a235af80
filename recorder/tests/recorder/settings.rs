//! Settings: the documented example parses; bad values are refused with their name. (The
//! environment overrides are exercised by `cli::serve_stops_gracefully_on_sigterm`.)

use gemfleet_recorder::settings::Settings;

#[test]
fn example_file_parses_and_bad_values_are_refused() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/recorder.example.toml");
    let s = Settings::load(Some(path)).unwrap();
    assert_eq!(s.broker.port, 1883);
    assert_eq!(s.minute_seconds, 60.0);
    assert_eq!(s.http_listen.port(), 9464);
    let bad = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(bad.path(), "minute_seconds = 0\n").unwrap();
    let e = Settings::load(Some(bad.path().to_str().unwrap())).unwrap_err();
    assert!(e.to_string().contains("minute_seconds"), "{e}");
    std::fs::write(bad.path(), "no_such_setting = 1\n").unwrap();
    assert!(Settings::load(Some(bad.path().to_str().unwrap())).is_err());
}
