"""Mailgate's durable Resonate engine: the SDK's state machine over SQLite rows."""

from service.engine.connection import EngineConnection as EngineConnection
from service.engine.connection import open_durable as open_durable
from service.engine.connection import open_memory as open_memory
from service.engine.errors import CorruptDatabase as CorruptDatabase
from service.engine.errors import DataDirLocked as DataDirLocked
from service.engine.errors import EngineError as EngineError
from service.engine.errors import EngineUnavailable as EngineUnavailable
from service.engine.errors import SchemaTooNew as SchemaTooNew
from service.engine.http import serve_engine as serve_engine
from service.engine.remote import remote_connections as remote_connections
