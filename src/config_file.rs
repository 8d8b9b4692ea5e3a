//! `tandem.toml`: the flags of a command, kept in a file.
//!
//! A section per command holds its flags by their long names (`[serve]`, `store-url = "..."`;
//! `_` and `-` alike; `[custody.run]` for `tandem custody run`); the `[all]` section holds flags
//! for every command that has them (a split exchange's store, journal and Redis), and a
//! command's own section wins over it. A flag given on the command line or through its
//! environment variable wins over the file, so one file serves several processes. The
//! file is found with `--config PATH` or `TANDEM_CONFIG`. Rather than a second configuration
//! model beside clap's, the file becomes command-line arguments: clap checks and documents
//! every value exactly as if typed.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context};

pub const ENV: &str = "TANDEM_CONFIG";

/// `args` (the process's, program name first) with the flags of the config file's section for
/// the command added where neither the command line nor the environment sets them. `command`
/// is the clap definition, to know each flag's environment variable and which flags exist.
pub fn merge(command: &clap::Command, args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let (mut args, path) = take_config_flag(args)?;
    let Some(path) = path.or_else(|| std::env::var_os(ENV).map(PathBuf::from)) else {
        return Ok(args);
    };
    let Some(first) = args.get(1).and_then(|a| a.to_str()).map(str::to_owned) else {
        return Ok(args);
    };
    let Some(mut sub) = command.find_subcommand(&first) else {
        return Ok(args);
    };
    // A command group's command (`custody run`): its section is `[custody.run]`.
    let mut path_in_file = vec![first];
    let mut depth = 2;
    while let Some(next) = args.get(depth).and_then(|a| a.to_str()).and_then(|n| sub.find_subcommand(n)) {
        path_in_file.push(next.get_name().to_owned());
        sub = next;
        depth += 1;
    }
    let name = path_in_file.join(".");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: toml::Table = text.parse().with_context(|| format!("parsing {}", path.display()))?;
    let mut section: Option<&toml::Table> = Some(&file);
    for part in &path_in_file {
        section = section.and_then(|t| t.get(part)).and_then(|v| v.as_table());
    }
    let all = match file.get("all") {
        Some(v) => Some(v.as_table().with_context(|| format!("{}: [all] must be a table", path.display()))?),
        None => None,
    };
    let own: Vec<(&String, &toml::Value, bool)> = section
        .into_iter()
        .flatten()
        // `[custody]` also holds `[custody.run]`: a table is a section, not a flag.
        .filter(|(_, v)| !v.is_table())
        .map(|(k, v)| (k, v, true))
        .collect();
    let shared = all.into_iter().flatten().filter(|(k, _)| !own.iter().any(|(o, _, _)| o.replace('_', "-") == k.replace('_', "-")));
    let entries: Vec<(&String, &toml::Value, bool)> = own.iter().copied().chain(shared.map(|(k, v)| (k, v, false))).collect();
    for (key, value, required) in entries {
        let long = key.replace('_', "-");
        let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
            if !required {
                continue;
            }
            bail!("{}: [{name}] {key}: `tandem {}` has no --{long}", path.display(), name.replace('.', " "));
        };
        let on_command_line = args.iter().any(|a| {
            a.to_str().is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
        });
        let from_env = arg.get_env().is_some_and(|var| std::env::var_os(var).is_some());
        if on_command_line || from_env {
            continue;
        }
        match value {
            toml::Value::Boolean(true) => args.push(format!("--{long}").into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => args.extend([format!("--{long}").into(), s.into()]),
            toml::Value::Integer(i) => args.extend([format!("--{long}").into(), i.to_string().into()]),
            toml::Value::Float(f) => args.extend([format!("--{long}").into(), f.to_string().into()]),
            other => bail!("{}: [{name}] {key}: a string, number or boolean, not {}", path.display(), other.type_str()),
        }
    }
    Ok(args)
}

/// Removes `--config PATH` / `--config=PATH` from the arguments.
fn take_config_flag(args: Vec<OsString>) -> anyhow::Result<(Vec<OsString>, Option<PathBuf>)> {
    let mut out = Vec::with_capacity(args.len());
    let mut path = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => path = Some(PathBuf::from(it.next().context("--config needs a file")?)),
            Some(s) if s.starts_with("--config=") => path = Some(PathBuf::from(&s["--config=".len()..])),
            _ => out.push(a),
        }
    }
    Ok((out, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> clap::Command {
        clap::Command::new("tandem").subcommand(
            clap::Command::new("serve")
                .arg(Arg::new("store-url").long("store-url").env("TANDEM_TEST_CONFIG_STORE_URL"))
                .arg(Arg::new("bind").long("bind"))
                .arg(Arg::new("http-workers").long("http-workers"))
                .arg(Arg::new("migrate").long("migrate").action(ArgAction::SetTrue)),
        )
        .subcommand(clap::Command::new("custody").subcommand(clap::Command::new("run").arg(Arg::new("bind").long("bind"))))
    }

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_file_fills_in_what_the_command_line_and_environment_leave_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tandem.toml");
        std::fs::write(
            &file,
            "[serve]\nstore_url = \"postgres://db/x\"\nbind = \"0.0.0.0:80\"\nhttp-workers = 4\nmigrate = true\n\n[demo]\nx = 1\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let merged = merge(&cli(), args(&["tandem", "serve", "--config", path, "--bind", "127.0.0.1:1"])).unwrap();
        assert_eq!(
            merged,
            args(&["tandem", "serve", "--bind", "127.0.0.1:1", "--http-workers", "4", "--migrate", "--store-url", "postgres://db/x"])
        );
        let parsed = cli().try_get_matches_from(merged).unwrap();
        let serve = parsed.subcommand_matches("serve").unwrap();
        assert_eq!(serve.get_one::<String>("bind").unwrap(), "127.0.0.1:1", "the command line wins");

        // A key the command does not have is an error naming it.
        std::fs::write(&file, "[serve]\nbnd = \"x\"\n").unwrap();
        let err = merge(&cli(), args(&["tandem", "serve", "--config", path])).unwrap_err().to_string();
        assert!(err.contains("--bnd"), "{err}");
        // [all] fills in what a command's own section leaves out, and only flags it has.
        std::fs::write(&file, "[all]\nstore-url = \"postgres://db/all\"\nbind = \"0.0.0.0:1\"\nno-such-flag = 1\n[serve]\nbind = \"0.0.0.0:2\"\n").unwrap();
        let merged = merge(&cli(), args(&["tandem", "serve", "--config", path])).unwrap();
        assert_eq!(merged, args(&["tandem", "serve", "--bind", "0.0.0.0:2", "--store-url", "postgres://db/all"]));
        // A command group's command reads its dotted section.
        std::fs::write(&file, "[all]\nbind = \"0.0.0.0:1\"\n[custody.run]\nbind = \"0.0.0.0:3\"\n").unwrap();
        let merged = merge(&cli(), args(&["tandem", "custody", "run", "--config", path])).unwrap();
        assert_eq!(merged, args(&["tandem", "custody", "run", "--bind", "0.0.0.0:3"]));

        // Without --config (or TANDEM_CONFIG) nothing changes.
        assert_eq!(merge(&cli(), args(&["tandem", "serve"])).unwrap(), args(&["tandem", "serve"]));
    }
}
