//! `capstan plugin new`: a plugin crate that builds and runs as created.
//! The README's plugin example is this template (a test keeps them equal),
//! so what the README shows is what the end-to-end test builds and runs.

use std::path::{Path, PathBuf};

use crate::exit::{self, Failure};

/// Create a plugin crate: a stage with a typed `with` table (whose JSON
/// Schema it publishes), a log line, a file and an output; a pipeline that
/// runs it; and cargo set up to build it for wasm32-wasip2.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  capstan plugin new demo
  cd demo && cargo build --release && capstan run pipeline.toml

It creates Cargo.toml, Cargo.lock, .cargo/config.toml (target wasm32-wasip2),
src/lib.rs, pipeline.toml, README.md and .gitignore. The SDK is a path
dependency, and Cargo.lock starts as the SDK checkout's: the first build takes
the crate versions Capstan is built with, offline when they are in cargo's
cache.")]
pub struct Args {
    /// The plugin's name (its crate's too): letters, digits, `_` and `-`,
    /// starting with a letter.
    pub name: String,
    /// Where to create it: a directory that does not exist yet, or is empty.
    /// Default: ./NAME.
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// The capstan-plugin SDK to depend on: the `plugins/sdk` directory of a
    /// Capstan checkout. Default: the one this capstan was built from.
    #[arg(long, value_name = "DIR", env = "CAPSTAN_SDK")]
    pub sdk: Option<PathBuf>,
}

/// The SDK of the checkout this binary was built from.
const BUILT_WITH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

const CARGO_TOML: &str = include_str!("template/Cargo.toml.in");
const CARGO_CONFIG: &str = include_str!("template/config.toml");
const LIB_RS: &str = include_str!("template/lib.rs");
const PIPELINE: &str = include_str!("template/pipeline.toml");
const README: &str = include_str!("template/README.md");
const GITIGNORE: &str = include_str!("template/gitignore");

/// Names the template's code uses: a stage type of one of these names
/// would not compile.
const TAKEN_TYPES: &[&str] = &[
    "Config",
    "Context",
    "Error",
    "Info",
    "Outcome",
    "Stage",
    "JsonSchema",
    "Deserialize",
];

pub fn exec(args: &Args) -> Result<u8, Failure> {
    let usage = |message: String| Failure::new(exit::USAGE, message);
    let name = args.name.as_str();
    if let Some(problem) = name_problem(name) {
        return Err(usage(format!(
            "error: `{}` cannot name a plugin: {problem}\n  choose a name such as `my-stage`",
            crate::text::inline(name)
        )));
    }
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from(name));
    check_empty(&dir).map_err(usage)?;
    let sdk = sdk_dir(args.sdk.as_deref()).map_err(usage)?;
    let sdk_text = sdk.to_str().ok_or_else(|| {
        usage(format!(
            "error: the SDK path {} is not UTF-8, which Cargo.toml cannot hold; pass --sdk with another path",
            sdk.display()
        ))
    })?;
    let vars = Vars::new(name, &toml::Value::String(sdk_text.to_string()).to_string());
    let mut files = vec![
        ("Cargo.toml", vars.render(CARGO_TOML)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        ("src/lib.rs", vars.render(LIB_RS)),
        ("pipeline.toml", vars.render(PIPELINE)),
        ("README.md", vars.render(README)),
        (".gitignore", GITIGNORE.to_string()),
    ];
    // The versions Capstan builds and tests the SDK with, and a first build
    // that needs no registry index: cargo drops the entries it does not need.
    if let Some(lock) = sdk
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|l| l.is_file())
    {
        let text = std::fs::read_to_string(&lock)
            .map_err(|e| usage(format!("error: cannot read {}: {e}", lock.display())))?;
        files.insert(1, ("Cargo.lock", text));
    }
    for (file, content) in &files {
        write(&dir.join(file), content).map_err(|e| {
            Failure::new(
                exit::INTERNAL,
                format!("error: cannot write {}: {e}", dir.join(file).display()),
            )
        })?;
    }
    let shown = dir.display();
    crate::term::print(format_args!(
        "created plugin `{name}` in {shown}: {}\n\
         Build and run it:\n  cd {shown}\n  cargo build --release\n  capstan run pipeline.toml\n",
        files.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ")
    ))?;
    Ok(exit::OK)
}

/// Why `name` cannot name a plugin crate (and its stage, and its Rust
/// type), if it cannot.
fn name_problem(name: &str) -> Option<String> {
    if let Some(problem) = crate::pipeline::name_problem(name) {
        return Some(format!("a plugin name {problem}"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some("it must start with a letter (it names a Rust crate)".into());
    }
    let ident = name.replace('-', "_");
    if KEYWORDS.contains(&ident.as_str()) {
        return Some(format!("`{ident}` is a Rust keyword"));
    }
    if RESERVED.contains(&ident.as_str()) {
        return Some(format!(
            "a crate named `{ident}` would clash with the standard library or a dependency"
        ));
    }
    let ty = type_name(name);
    if TAKEN_TYPES.contains(&ty.as_str()) {
        return Some(format!(
            "its type, `{ty}`, is a name the template's code uses"
        ));
    }
    None
}

/// Rust's keywords, strict and reserved (edition 2024).
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Crate names cargo or the build would trip over.
const RESERVED: &[&str] = &[
    "std",
    "core",
    "alloc",
    "proc_macro",
    "test",
    "capstan_plugin",
    "serde",
    "schemars",
];

/// `my-stage` → `MyStage`: the stage's Rust type.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect()
}

/// What the templates say in `{{…}}`.
struct Vars {
    values: Vec<(&'static str, String)>,
}

impl Vars {
    /// `sdk` is the SDK's path as a TOML string (quoted).
    fn new(name: &str, sdk: &str) -> Vars {
        Vars {
            values: vec![
                ("name", name.to_string()),
                ("crate", name.replace('-', "_")),
                ("Type", type_name(name)),
                ("sdk", sdk.to_string()),
            ],
        }
    }

    fn render(&self, template: &str) -> String {
        self.values
            .iter()
            .fold(template.to_string(), |text, (k, v)| {
                text.replace(&format!("{{{{{k}}}}}"), v)
            })
    }
}

/// `dir` can take the new crate: it does not exist, or is an empty
/// directory.
fn check_empty(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "error: {} exists and is not empty; give a new directory with --path, or remove it",
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "error: cannot create the plugin in {}: {e}; give a new directory with --path",
            dir.display()
        )),
    }
}

/// The SDK directory: given, else the one this binary was built with;
/// checked to be the `capstan-plugin` crate.
fn sdk_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    let (dir, from) = match given {
        Some(dir) => (dir.to_path_buf(), "--sdk"),
        None => (
            PathBuf::from(BUILT_WITH),
            "the Capstan checkout this capstan was built from",
        ),
    };
    let fix =
        "pass --sdk DIR (or set CAPSTAN_SDK): the plugins/sdk directory of a Capstan checkout";
    let dir = dir.canonicalize().map_err(|e| {
        format!(
            "error: no capstan-plugin SDK at {} (from {from}): {e}\n  {fix}",
            dir.display()
        )
    })?;
    let manifest = dir.join("Cargo.toml");
    let name = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_string));
    if name.as_deref() != Some("capstan-plugin") {
        return Err(format!(
            "error: {} is not the capstan-plugin SDK (its Cargo.toml does not name package `capstan-plugin`)\n  {fix}",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Write `content` to `path`, parents created.
fn write(path: &Path, content: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_name_a_plugin_are_refused_with_the_reason() {
        for good in ["demo", "my-stage", "a_b", "x2", "Stage2"] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for (bad, reason) in [
            ("", "is empty"),
            ("2fast", "must start with a letter"),
            ("_x", "must start with a letter"),
            ("a.b", "may hold only letters"),
            ("my stage", "may hold only letters"),
            ("fn", "is a Rust keyword"),
            ("self", "is a Rust keyword"),
            ("std", "would clash"),
            ("capstan-plugin", "would clash"),
            ("config", "`Config`, is a name the template's code uses"),
            ("stage", "`Stage`"),
        ] {
            let problem = name_problem(bad).unwrap_or_else(|| panic!("{bad:?} was taken"));
            assert!(problem.contains(reason), "{bad:?}: {problem}");
        }
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name("demo"), "Demo");
        assert_eq!(type_name("my-stage"), "MyStage");
        assert_eq!(type_name("a__b-c"), "ABC");
    }

    #[test]
    fn every_placeholder_is_filled() {
        let vars = Vars::new("my-stage", "\"/sdk\"");
        for template in [CARGO_TOML, LIB_RS, PIPELINE, README] {
            let text = vars.render(template);
            assert!(!text.contains("{{"), "{text}");
            assert!(!text.contains("}}"), "{text}");
        }
        assert!(vars.render(LIB_RS).contains("struct MyStage;"));
        assert!(vars.render(PIPELINE).contains("release/my_stage.wasm"));
        assert!(vars.render(CARGO_TOML).contains("path = \"/sdk\""));
    }

    /// The README's plugin example is the template, as `capstan plugin new
    /// demo` writes it: the end-to-end test that builds and runs a new
    /// plugin builds the README's code.
    #[test]
    fn the_readme_example_is_the_template() {
        let readme = include_str!("../../../../README.md");
        let section = &readme[readme.find("## Plugin authors").expect("the section")..];
        let block = |lang: &str| {
            let start = section
                .find(&format!("```{lang}\n"))
                .unwrap_or_else(|| panic!("a {lang} block"))
                + lang.len()
                + 4;
            let len = section[start..].find("```\n").expect("its end");
            &section[start..start + len]
        };
        let vars = Vars::new("demo", "\"/path/to/capstan/plugins/sdk\"");
        assert_eq!(block("toml"), vars.render(CARGO_TOML));
        assert_eq!(block("rust"), vars.render(LIB_RS));
    }

    #[test]
    fn a_directory_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_empty(&dir.path().join("new")), Ok(()));
        assert_eq!(check_empty(dir.path()), Ok(()));
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let e = check_empty(dir.path()).unwrap_err();
        assert!(e.contains("exists and is not empty"), "{e}");
        let e = check_empty(&dir.path().join("f")).unwrap_err();
        assert!(e.contains("cannot create the plugin in"), "{e}");
    }

    #[test]
    fn the_sdk_is_checked() {
        let sdk = sdk_dir(None).unwrap();
        assert!(sdk.join("src/lib.rs").is_file());
        let dir = tempfile::tempdir().unwrap();
        let e = sdk_dir(Some(dir.path())).unwrap_err();
        assert!(e.contains("is not the capstan-plugin SDK"), "{e}");
        let e = sdk_dir(Some(&dir.path().join("gone"))).unwrap_err();
        assert!(e.contains("no capstan-plugin SDK at"), "{e}");
        assert!(e.contains("pass --sdk DIR"), "{e}");
    }
}
