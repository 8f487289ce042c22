//! A path declared twice in one file is refused, with the position of the second declaration, a
//! caret under it and a hint; the first declaration is not blamed.

use ironplant_core::config::parse;

const DEVICE: &str = r#"[[device]]
id = "plc1"
protocol = "modbus-tcp"
address = "127.0.0.1:5020"
"#;

#[test]
fn a_tag_declared_twice_is_an_error_at_the_second_declaration() {
    let source = format!(
        r#"{DEVICE}
[[tag]]
path = "acme/lyon/line1/filler/speed"
device = "plc1"
modbus = {{ table = "holding", address = 0 }}

[[tag]]
path = "acme/lyon/line1/filler/level"
device = "plc1"
modbus = {{ table = "holding", address = 1 }}

[[tag]]
path = "acme/lyon/line1/filler/speed"
device = "plc1"
modbus = {{ table = "holding", address = 2 }}
"#
    );
    let errs = parse("plant.toml", &source).expect_err("a duplicate tag must be refused");
    assert_eq!(errs.errors.len(), 1, "{errs}");
    let e = &errs.errors[0];
    assert_eq!(
        e.message,
        "tag acme/lyon/line1/filler/speed is declared twice"
    );
    assert_eq!(e.hint.as_deref(), Some("remove one of the [[tag]] entries"));
    // The span covers the second path string, quotes included.
    assert_eq!(errs.line_col(e.span.start), (17, 8));
    assert_eq!(&source[e.span.clone()], "\"acme/lyon/line1/filler/speed\"");
    assert_eq!(
        errs.to_string(),
        "plant.toml:17:8: error: tag acme/lyon/line1/filler/speed is declared twice\n\
         \x20  17 | path = \"acme/lyon/line1/filler/speed\"\n\
         \x20     |        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n\
         \x20     = hint: remove one of the [[tag]] entries\n\
         1 error(s) in plant.toml"
    );
}

#[test]
fn every_repeat_is_reported_together_with_other_errors() {
    let source = format!(
        r#"{DEVICE}
[[tag]]
path = "a/b/c/t"
device = "plc1"
modbus = {{ table = "holding", address = 0 }}

[[tag]]
path = "a/b/c/t"
device = "plc1"
modbus = {{ table = "holding", address = 1 }}

[[tag]]
path = "a/b/c/u"
device = "plc9"
modbus = {{ table = "holding", address = 2 }}

[[tag]]
path = "a/b/c/t"
device = "plc1"
modbus = {{ table = "holding", address = 3 }}
"#
    );
    let errs = parse("plant.toml", &source).expect_err("duplicates must be refused");
    let found: Vec<(usize, &str)> = errs
        .errors
        .iter()
        .map(|e| (errs.line_col(e.span.start).0, e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (12, "tag a/b/c/t is declared twice"),
            (18, "unknown device \"plc9\""),
            (22, "tag a/b/c/t is declared twice"),
        ],
        "{errs}"
    );
}

#[test]
fn the_same_path_as_asset_and_tag_or_as_two_assets_is_an_error() {
    let source = format!(
        r#"{DEVICE}
[[asset]]
path = "acme/lyon"

[[asset]]
path = "acme/lyon/line1"

[[asset]]
path = "acme/lyon"

[[tag]]
path = "acme/lyon/line1"
device = "plc1"
modbus = {{ table = "holding", address = 0 }}
"#
    );
    let errs = parse("plant.toml", &source).expect_err("clashing paths must be refused");
    let found: Vec<(usize, usize, &str, Option<&str>)> = errs
        .errors
        .iter()
        .map(|e| {
            let (line, col) = errs.line_col(e.span.start);
            (line, col, e.message.as_str(), e.hint.as_deref())
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (
                13,
                8,
                "asset acme/lyon is declared twice",
                Some("remove one of the [[asset]] entries")
            ),
            (
                16,
                8,
                "acme/lyon/line1 is declared as an asset and as a tag",
                Some("a tag path must end below its asset")
            ),
        ],
        "{errs}"
    );
}

#[test]
fn distinct_paths_are_fine() {
    let source = format!(
        r#"{DEVICE}
[[tag]]
path = "a/b/c/t"
device = "plc1"
modbus = {{ table = "holding", address = 0 }}

[[tag]]
path = "a/b/c/t2"
device = "plc1"
modbus = {{ table = "holding", address = 1 }}
"#
    );
    let cfg = parse("plant.toml", &source).expect("valid config");
    assert_eq!(cfg.tags.len(), 2);
}
