//! Every key binding of the console in one list (as gitui's `KeysList`):
//! decoding a key press, the help popup and the key-hint bar all read it, so
//! they cannot disagree.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::app::Tab;

/// What a key asks for, before the app decides what it means in context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    ShowTab(Tab),
    NextTab,
    PrevTab,
    Up,
    Down,
    PageUp,
    PageDown,
    First,
    Last,
    CheckService,
    CheckAll,
    RepairNode,
    RepairService,
    Rebuild,
    AddNode,
    RemoveNode,
    CycleFilter,
    Refresh,
    Help,
    Quit,
}

/// One binding: the keys, how the help shows them, what they do.
pub struct Binding {
    pub codes: &'static [KeyCode],
    pub keys: &'static str,
    pub help: &'static str,
    pub command: Command,
    /// Whether the action changes the cluster (refused when read-only).
    pub mutating: bool,
}

const fn bind(
    codes: &'static [KeyCode],
    keys: &'static str,
    help: &'static str,
    command: Command,
) -> Binding {
    Binding {
        codes,
        keys,
        help,
        command,
        mutating: false,
    }
}

const fn act(
    codes: &'static [KeyCode],
    keys: &'static str,
    help: &'static str,
    command: Command,
) -> Binding {
    Binding {
        codes,
        keys,
        help,
        command,
        mutating: true,
    }
}

pub const KEYS: &[Binding] = &[
    bind(
        &[KeyCode::Char('1')],
        "1",
        "Cluster view",
        Command::ShowTab(Tab::Cluster),
    ),
    bind(
        &[KeyCode::Char('2')],
        "2",
        "Consistency view",
        Command::ShowTab(Tab::Consistency),
    ),
    bind(
        &[KeyCode::Char('3')],
        "3",
        "Events view",
        Command::ShowTab(Tab::Events),
    ),
    bind(
        &[KeyCode::Char('4')],
        "4",
        "Traffic view",
        Command::ShowTab(Tab::Traffic),
    ),
    bind(
        &[KeyCode::Char('5')],
        "5",
        "Transactions view",
        Command::ShowTab(Tab::Transactions),
    ),
    bind(&[KeyCode::Tab], "Tab", "next view", Command::NextTab),
    bind(
        &[KeyCode::BackTab],
        "Shift-Tab",
        "previous view",
        Command::PrevTab,
    ),
    bind(
        &[KeyCode::Up, KeyCode::Char('k')],
        "↑/k",
        "select previous row",
        Command::Up,
    ),
    bind(
        &[KeyCode::Down, KeyCode::Char('j')],
        "↓/j",
        "select next row",
        Command::Down,
    ),
    bind(&[KeyCode::PageUp], "PgUp", "page up", Command::PageUp),
    bind(&[KeyCode::PageDown], "PgDn", "page down", Command::PageDown),
    bind(
        &[KeyCode::Home, KeyCode::Char('g')],
        "Home/g",
        "first row",
        Command::First,
    ),
    bind(
        &[KeyCode::End, KeyCode::Char('G')],
        "End/G",
        "last row",
        Command::Last,
    ),
    act(
        &[KeyCode::Char('c')],
        "c",
        "check the selected service",
        Command::CheckService,
    ),
    act(
        &[KeyCode::Char('C')],
        "C",
        "check every service now",
        Command::CheckAll,
    ),
    act(
        &[KeyCode::Char('r')],
        "r",
        "repair the selected node",
        Command::RepairNode,
    ),
    act(
        &[KeyCode::Char('R')],
        "R",
        "repair all mismatching",
        Command::RepairService,
    ),
    act(
        &[KeyCode::Char('b')],
        "b",
        "rebuild the selected node",
        Command::Rebuild,
    ),
    act(
        &[KeyCode::Char('a')],
        "a",
        "add a node to the service",
        Command::AddNode,
    ),
    act(
        &[KeyCode::Char('d'), KeyCode::Delete],
        "d/Del",
        "remove the selected node",
        Command::RemoveNode,
    ),
    bind(
        &[KeyCode::Char('f')],
        "f",
        "filter events by service",
        Command::CycleFilter,
    ),
    bind(
        &[KeyCode::Char('u'), KeyCode::F(5)],
        "u/F5",
        "refresh now",
        Command::Refresh,
    ),
    bind(&[KeyCode::Char('?')], "?", "this help", Command::Help),
    bind(
        &[KeyCode::Char('q'), KeyCode::Esc],
        "q/Esc",
        "quit (Esc: close popup)",
        Command::Quit,
    ),
];

/// Keys of the confirm dialog, shown under the main list in the help.
pub const DIALOG_KEYS: &[(&str, &str)] = &[
    ("Tab/←/→", "Cancel ⇄ the action"),
    ("Enter", "press the focused button"),
    ("0-9/Bksp", "edit the node id (add)"),
    ("Esc", "close, do nothing"),
];

/// The command a key press asks for, if any. Ctrl-C always quits.
pub fn command(key: KeyEvent) -> Option<Command> {
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(key.code, KeyCode::Char('c')).then_some(Command::Quit);
    }
    KEYS.iter()
        .find(|b| b.codes.contains(&key.code))
        .map(|b| b.command)
}

/// Whether `command` would change the cluster.
pub fn is_mutating(command: Command) -> bool {
    KEYS.iter().any(|b| b.command == command && b.mutating)
}

/// The short hints of the bottom bar, most useful first; the bar shows as
/// many as fit.
pub fn hints(read_only: bool) -> Vec<(&'static str, &'static str)> {
    let mut hints = vec![
        ("?", "help"),
        ("q", "quit"),
        ("1-5", "views"),
        ("↑↓", "select"),
    ];
    if !read_only {
        hints.extend([
            ("c", "check"),
            ("r", "repair"),
            ("b", "rebuild"),
            ("a", "add"),
            ("d", "remove"),
        ]);
    }
    hints.push(("f", "filter"));
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn no_key_is_bound_twice() {
        let mut seen = Vec::new();
        for b in KEYS {
            for c in b.codes {
                assert!(!seen.contains(c), "{c:?} bound twice");
                seen.push(*c);
            }
        }
    }

    #[test]
    fn keys_decode_to_their_commands() {
        assert_eq!(
            command(key(KeyCode::Char('3'))),
            Some(Command::ShowTab(Tab::Events))
        );
        assert_eq!(command(key(KeyCode::Char('j'))), Some(Command::Down));
        assert_eq!(command(key(KeyCode::Esc)), Some(Command::Quit));
        assert_eq!(command(key(KeyCode::Char('x'))), None);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(command(ctrl_c), Some(Command::Quit));
        // Shifted letters arrive as upper case with SHIFT set.
        let shift_c = KeyEvent::new(KeyCode::Char('C'), KeyModifiers::SHIFT);
        assert_eq!(command(shift_c), Some(Command::CheckAll));
    }

    #[test]
    fn only_actions_are_mutating() {
        assert!(is_mutating(Command::RepairNode));
        assert!(is_mutating(Command::CheckAll));
        assert!(!is_mutating(Command::Help));
        assert!(!is_mutating(Command::CycleFilter));
    }
}
