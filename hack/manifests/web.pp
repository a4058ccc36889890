# A web server: its document root and index page, under the node's directory.
$root = "${facts['vsop_node_dir']}/www"

file { $root:
  ensure => directory,
}

file { "${root}/index.html":
  ensure  => file,
  content => "<h1>${facts['fqdn']}</h1>\n",
}
