"""The ORM over the dqlite dialect, sync and asyncio, on the session's real cluster:
relationships, eager loading, bulk INSERT/UPDATE/DELETE."""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import ForeignKey, String, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
    subqueryload,
)


class Base(DeclarativeBase):
    pass


tag_links = sa.Table(
    "post_tag", Base.metadata,
    sa.Column("post_id", ForeignKey("post.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag_id", ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True),
)


class Author(Base):
    __tablename__ = "author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    active: Mapped[bool | None]
    joined: Mapped[datetime.datetime] = mapped_column(default=lambda: datetime.datetime(2024, 1, 1, 12, 0, 0, 500))
    posts: Mapped[list[Post]] = relationship(back_populates="author", cascade="all, delete-orphan",
                                             order_by="Post.id")


class Post(Base):
    __tablename__ = "post"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("author.id"))
    title: Mapped[str] = mapped_column(String(100))
    score: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2), default=Decimal("0"))
    author: Mapped[Author] = relationship(back_populates="posts")
    tags: Mapped[list[Tag]] = relationship(secondary=tag_links, back_populates="posts", order_by="Tag.name")


class Tag(Base):
    __tablename__ = "tag"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=True)
    posts: Mapped[list[Post]] = relationship(secondary=tag_links, back_populates="tags")


def hosts_query(cluster) -> str:
    return "&".join(f"host={a}" for a in cluster.addresses)


@pytest.fixture
def engine(dqlite_cluster, dqlite_database):
    engine = sa.create_engine(f"dqlite:///{dqlite_database}?{hosts_query(dqlite_cluster)}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def populate(session) -> None:
    python, sql = Tag(name="python"), Tag(name="sql")
    ann = Author(name="ann", active=True, posts=[
        Post(title="dialects", score=Decimal("4.50"), tags=[python, sql]),
        Post(title="pools", tags=[python]),
    ])
    bob = Author(name="bob", active=None, posts=[Post(title="raft", tags=[sql])])
    session.add_all([ann, bob, Author(name="cy", active=False)])


def test_relationships_and_eager_loading(engine):
    with Session(engine) as session, session.begin():
        populate(session)
    assert engine.dialect.insert_returning is False  # the flush used lastrowid

    for option in (selectinload, joinedload, subqueryload):
        with Session(engine) as session:
            authors = session.scalars(
                select(Author).options(option(Author.posts).selectinload(Post.tags)).order_by(Author.name)
            ).unique().all()
            session.expunge_all()  # everything needed must already be loaded
            assert [(a.name, a.active, [(p.title, [t.name for t in p.tags]) for p in a.posts])
                    for a in authors] == [
                ("ann", True, [("dialects", ["python", "sql"]), ("pools", ["python"])]),
                ("bob", None, [("raft", ["sql"])]),
                ("cy", False, []),
            ]
            assert authors[0].joined == datetime.datetime(2024, 1, 1, 12, 0, 0, 500)
            assert authors[0].posts[0].score == Decimal("4.50")

    with Session(engine) as session:
        sql = session.scalars(select(Tag).where(Tag.name == "sql")).one()
        assert sorted(p.title for p in sql.posts) == ["dialects", "raft"]  # lazy load
        post = session.get(Post, 1)
        assert post.author.name == "ann"

    # delete-orphan cascade and ON DELETE CASCADE of the link table
    with Session(engine) as session, session.begin():
        ann = session.scalars(select(Author).where(Author.name == "ann")).one()
        session.delete(ann)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Post)) == 1
        assert conn.scalar(select(func.count()).select_from(tag_links)) == 1


def test_bulk_insert_update_delete(engine):
    with Session(engine) as session, session.begin():
        session.execute(insert(Author), [{"name": f"a{i}", "active": i % 3 == 0 or None} for i in range(500)])
        ids = session.scalars(select(Author.id).order_by(Author.id)).all()
        assert len(ids) == 500
        session.execute(insert(Post), [{"author_id": ids[i % 10], "title": f"p{i}"} for i in range(1000)])
    with Session(engine) as session:
        # selectinload sends the parents' keys 500 at a time: more parameters
        # than a 1.11 server takes in one statement.
        authors = session.scalars(select(Author).options(selectinload(Author.posts))).all()
        assert sum(len(a.posts) for a in authors) == 1000 and len(authors) == 500
    with Session(engine) as session, session.begin():
        # bulk UPDATE by primary key
        session.execute(update(Author), [{"id": i, "name": f"renamed{i}"} for i in ids[:100]])
        # UPDATE ... WHERE, synchronising the identity map
        loaded = session.get(Author, ids[200])
        session.execute(update(Author).where(Author.id >= ids[200]).values(active=False))
        assert loaded.active is False
        session.execute(update(Author).where(Author.id == ids[201]).values(active=None))
    with Session(engine) as session:
        assert session.scalar(select(func.count()).where(Author.name.like("renamed%"))) == 100
        assert session.scalar(select(Author.active).where(Author.id == ids[201])) is None
        assert session.scalar(select(func.count()).where(Author.active.is_(None))) == 134
    with Session(engine) as session, session.begin():
        session.execute(delete(Post).where(Post.author_id.in_(ids[:5])))
        obsolete = session.get(Author, ids[499])
        session.execute(delete(Author).where(Author.id > ids[400]), execution_options={"synchronize_session": "fetch"})
        assert obsolete not in session
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Post)) == 500
        assert session.scalar(select(func.count()).select_from(Author)) == 401


def test_unit_of_work_rolls_back_on_error(engine):
    with Session(engine) as session:
        session.add(Author(name="dup"))
        session.commit()
        session.add_all([Author(name="fine"), Author(name="dup")])
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()
        session.rollback()
        assert session.scalars(select(Author.name)).all() == ["dup"]
        with session.begin_nested():
            session.add(Author(name="nested"))
        try:
            with session.begin_nested():
                session.add(Author(name="dup"))
                session.flush()
        except sa.exc.IntegrityError:
            pass
        session.commit()
        assert sorted(session.scalars(select(Author.name)).all()) == ["dup", "nested"]


def test_async_orm(dqlite_cluster, dqlite_database):
    async def main():
        engine = create_async_engine(f"dqlite+aio:///{dqlite_database}?{hosts_query(dqlite_cluster)}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session, session.begin():
            populate(session)
        async with sessions() as session:
            authors = (await session.scalars(
                select(Author).options(selectinload(Author.posts).selectinload(Post.tags),)
                .order_by(Author.name))).all()
            assert [(a.name, [p.title for p in a.posts]) for a in authors] == [
                ("ann", ["dialects", "pools"]), ("bob", ["raft"]), ("cy", [])]
            assert authors[0].posts[0].tags[1].name == "sql"
            joined = (await session.scalars(
                select(Post).options(joinedload(Post.author)).order_by(Post.title))).all()
            assert [p.author.name for p in joined] == ["ann", "ann", "bob"]
        async with sessions() as session, session.begin():
            await session.execute(insert(Tag), [{"name": f"t{i}"} for i in range(200)])
            await session.execute(update(Tag).where(Tag.name.like("t%")).values(name=Tag.name + "x"))
            await session.execute(delete(Tag).where(Tag.name.like("t1%")))
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Tag)) == 2 + 200 - 111
            rows = await session.stream_scalars(select(Tag.name).order_by(Tag.id).limit(3))
            assert [name async for name in rows] == ["python", "sql", "t0x"]
        async with AsyncSession(engine) as session:
            session.add(Author(name="ann"))
            with pytest.raises(sa.exc.IntegrityError):
                await session.commit()
        await engine.dispose()

    asyncio.run(main())
