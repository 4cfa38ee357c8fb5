//! `${{ … }}` templates: parsing, checking, and evaluating against a small scope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_pipeline::expr::{Scope, Value, check_functions, parse_template};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = parse_template(text) else {
        return;
    };
    let _ = check_functions(&template);
    let _ = template.references();
    let mut scope = Scope::new();
    scope.insert(&["init", "name"], Value::from("main".to_string()));
    scope.insert(&["init", "count"], Value::from("3".to_string()));
    scope.insert_secret(&["secrets", "token"], Value::from("s3cret".to_string()));
    let _ = template.render(&scope);
    let _ = template.evaluate(&scope);
});
