"""The HTML report (``mwsis report``) and the pictures it embeds."""
