"""An app whose jobs module fails to import (a worker must refuse to start, naming it)."""
