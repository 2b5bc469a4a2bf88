"""Sans-I/O IMAP4rev1 protocol layer: framing, command parser, response serialiser, modified UTF-7.

`framing.CommandReader` cuts the client's octets into commands (with literals); `parser.parse_command`
turns one into a typed `command.Command`; `serialize` writes responses; `utf7` converts mailbox names.
Nothing here does I/O or knows about sessions.
"""
