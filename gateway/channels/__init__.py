"""Channel logs: the data-plane storage of brokers and channels (see `base.ChannelLog`)."""

from __future__ import annotations

from gateway.channels.base import ChannelLog, ChannelLogClosed
from gateway.channels.sqlite import SqliteChannelLog
from gateway.channels.sqlite_reader import SqliteLogReader

__all__ = ["ChannelLog", "ChannelLogClosed", "SqliteChannelLog", "SqliteLogReader"]
