"""Where releases come from: the ``Source`` interface (``base``) and one class per client
(``svn_cli``, ``pysvn``); ``svn.Svn`` chooses the Subversion client the config names."""
