//! One test per case file of the shared corpus, checked against expected.json.

use crate::now;
use gemfleet_gemini::{Classification, classify, pacific};
use serde_json::Value;
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixtures_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The case's status (None: not given) and input text.
fn load(file: &str, exp: &Value) -> (Option<u16>, String) {
    let text = std::fs::read_to_string(fixtures_dir().join(file)).unwrap();
    if file.ends_with(".json") {
        let case: Value = serde_json::from_str(&text).unwrap();
        let status = case["http_status"].as_u64().map(|s| s as u16);
        (status, serde_json::to_string_pretty(&case["body"]).unwrap())
    } else {
        (
            exp.get("status").and_then(Value::as_u64).map(|s| s as u16),
            text,
        )
    }
}

fn as_json(c: &Classification) -> Value {
    serde_json::to_value(c).unwrap()
}

fn check_fields(id: &str, exp: &Value, got: &Classification) {
    let json = as_json(got);
    let allowed = |key: &str, field: &str| {
        if let Some(list) = exp.get(key).and_then(Value::as_array) {
            assert!(
                list.contains(&json[field]),
                "{id}: {field} = {} not in {list:?} ({})",
                json[field],
                got.reason
            );
        }
    };
    allowed("cls", "class");
    if exp.get("loose").and_then(Value::as_bool) == Some(true) {
        return;
    }
    allowed("scope", "scope");
    for field in ["dimension", "limit", "tier", "in_stream"] {
        if let Some(want) = exp.get(field) {
            assert_eq!(&json[field], want, "{id}: {field} ({})", got.reason);
        }
    }
    if let Some(range) = exp.get("retry_ms").and_then(Value::as_array) {
        let (lo, hi) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
        let ms = got
            .retry_after_ms
            .unwrap_or_else(|| panic!("{id}: retry_after_ms is null ({})", got.reason));
        assert!(
            (lo..=hi).contains(&ms),
            "{id}: retry_after_ms {ms} not in [{lo}, {hi}]"
        );
    }
    if let Some(until) = exp.get("until").and_then(Value::as_str) {
        let want = if until == "next_pt_midnight" {
            pacific::next_midnight(now())
        } else {
            until.parse().unwrap()
        };
        assert_eq!(got.until, Some(want), "{id}: until ({})", got.reason);
    }
    if exp.get("in_stream").is_none() {
        assert!(!got.in_stream, "{id}: in_stream without a 200 stream");
    }
}

fn check_case(id: &str) {
    let all = expected();
    let exp = all
        .get(id)
        .unwrap_or_else(|| panic!("{id} missing from expected.json"));
    let file = exp["file"].as_str().unwrap();
    let (status, body) = load(file, exp);
    let got = classify(status, &body, None, now());
    check_fields(id, exp, &got);
    // JSON bodies carry their code: with no status given, the class must not change.
    if file.ends_with(".json") {
        let inferred = classify(None, &body, None, now());
        assert_eq!(
            inferred.class, got.class,
            "{id}: class with the status inferred"
        );
    }
}

macro_rules! case_tests {
    ($($name:ident => $id:literal),* $(,)?) => {
        $( #[test] fn $name() { check_case($id); } )*

        /// Every case of expected.json has a test above (a new case file fails here until
        /// it gets one).
        #[test]
        fn every_case_has_a_test() {
            let listed = [$($id),*];
            for id in expected().keys() {
                assert!(listed.contains(&id.as_str()), "case {id} has no test");
            }
        }
    };
}

case_tests! {
    c01_rpm_legacy_v1_per_region => "c01",
    c02_tpm_input_free_tier => "c02",
    c03_rpd_free_tier => "c03",
    c04_free_tier_limit_zero_multi => "c04",
    c06_paid_tier_experimental_migrate => "c06",
    c10_429_no_details => "c10",
    c11_vertex_429_paygo => "c11",
    c13_gemini_503_in_stream => "c13",
    c14_503_model_overloaded => "c14",
    c16_codeassist_503_capacity_exhausted => "c16",
    c17_codeassist_429_array_ratelimitexceeded => "c17",
    c18_codeassist_pro_requests_per_day => "c18",
    c19_codeassist_quota_exhausted_hours => "c19",
    c22_codeassist_rate_limit_no_retryinfo => "c22",
    c23_400_api_key_invalid => "c23",
    c25_403_api_key_leaked => "c25",
    c26_403_consumer_suspended => "c26",
    c28_403_api_key_service_blocked => "c28",
    c30_403_service_disabled_grpc_print => "c30",
    c31_400_user_location_not_supported => "c31",
    c32_400_billed_users_only => "c32",
    c34_429_monthly_spending_cap => "c34",
    c37_cli_daily_quota_autoswitch => "c37",
    c39_cli_apikey_429_wait_advice => "c39",
    c40_cli_usage_limit_all_pro => "c40",
    c42_ide_agent_daily_limit_switch => "c42",
}
