# A web server: its document root and index page.
class role::web {
  include role
  $root = "${facts['vsop_node_dir']}/www"

  file { $root:
    ensure => directory,
  }
  file { "${root}/index.html":
    ensure  => file,
    content => "<h1>${trusted['certname']}</h1>\n<p>role web from the Puppet master</p>\n",
  }
}
