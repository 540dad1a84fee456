"""lacrm-etl: bulk-import relationships into Less Annoying CRM."""

__version__ = "0.1.0"
